#!/usr/bin/env python3
"""perf/profile_report.py [--name NAME]: results/NAME.md (default profile) from perf/profile.sh's NAME.csv,
NAME-syscalls.csv, NAME-split.csv, NAME-meta.txt and NAME-commands.txt; keeps the old NAME.md's text below
READING_MARKER.

perf/profile_report.py --classify SERVER SCENARIO RESPONSES REPORT SPLIT_CSV TOP_TXT (profile.sh): splits one
`perf report --sort dso,sym` by whose code each sample fell in; appends to SPLIT_CSV and TOP_TXT.
"""
import csv
import os
import re
import sys
from collections import defaultdict

sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import (RESULTS, fmt, num, per_response, quotient, read_lines, read_meta, read_rows,  # noqa: E402
                    responses, row, table)

READING_MARKER = "<!-- reading: kept when profile_report.py redraws the tables above -->"
RECORD_FREQUENCY_HZ = 2000          # profile.sh's perf record -F: one sample is 1/2000 s of CPU
TOP_SYMBOLS = 30                    # symbols listed per server in profile-top.txt
SYSCALL_MIN_PER_RESPONSE = 0.005    # syscalls rarer than this per response (in every server) are left out
SERVER_ORDER = ["splice", "sockets", "nginx", "splice-spin0", "splice-inline"]
PER_RESPONSE = ["syscalls", "epoll_wait_returns", "context_switches", "pool_work_items"]   # summary table columns
# Whose code, in the order of the table's columns. "bcl" is managed System.* code; "runtime" is the native
# runtime (coreclr with GC and type system, the JIT, System.Native, the dynamic linker, stubs). "libc" is
# mostly its syscall wrappers: on this VM, cpu-clock samples of time spent in a syscall with interrupts off
# land on the wrapper's return or on the kernel's pvm_irq_enable, so libc + kernel is the syscalls' cost.
CATEGORIES = {"ours": "SpliceTransport (ours)", "kestrel": "Kestrel", "aspnetcore": "other ASP.NET Core + app",
              "bcl": "BCL (System.*)", "runtime": "runtime native (coreclr, GC, JIT, stubs)",
              "libc": "libc (syscall wrappers)", "nginx": "nginx", "kernel": "kernel", "other": "unresolved"}
# Managed assemblies (or R2R images, by file name without .dll) by prefix; the first match wins.
ASSEMBLIES = [("ours", ("SpliceTransport",)), ("kestrel", ("Microsoft.AspNetCore.Server.Kestrel",)),
              ("aspnetcore", ("Microsoft.AspNetCore.", "Microsoft.Extensions.", "Microsoft.Net.Http.Headers",
                              "StaticFileServer")),
              ("bcl", ("System", "mscorlib", "netstandard"))]
RUNTIME_LIBRARIES = ("libcoreclr.so", "libclrjit.so", "libSystem.Native.so", "ld-linux", "libstdc++",
                     "libgcc", "libm.so", "[vdso]", "libclrgc", "libSystem.")
LIBC = ("libc.so", "libc-", "libpthread")
REPORT_LINE = re.compile(r"^\s*(\d+)\s+(\S+(?: tid \d+)?)\s+\[[.kgu]\]\s+(.*)$")   # samples, dso, symbol


def by_scenario(rows):
    """{scenario: {server: [its rows]}}, scenarios in first-seen order, servers in SERVER_ORDER (others last)."""
    out = {}
    for r in rows:
        out.setdefault(r["scenario"], {}).setdefault(r["server"], []).append(r)
    return {sc: {s: by[s] for s in sorted(by, key=lambda s: (SERVER_ORDER + [s]).index(s))} for sc, by in out.items()}


def classify_assembly(assembly):
    return next((category for category, prefixes in ASSEMBLIES if assembly.startswith(prefixes)), "other")


def classify(dso, symbol):
    """Whose code a sample fell in (a CATEGORIES key), from perf report's dso and symbol."""
    if dso.startswith("[") and not dso.startswith(("[JIT]", "[vdso]", "[unknown]")):
        return "kernel"
    if dso.startswith(("[JIT]", "perf-")):
        # "instance void [Assembly] Namespace.Type::Method(...)[Tier]": the declaring type's assembly is the
        # last "[...] " before the first "::" (parameters, which can name other assemblies, come after it).
        assemblies = re.findall(r"\[([^\]\s]+)\] ", symbol.split("::", 1)[0])
        # Stubs (IL_STUB_PInvoke, dispatch and precode stubs) have no declaring assembly.
        return classify_assembly(assemblies[-1]) if assemblies else "runtime"
    if dso.endswith(".dll"):
        return classify_assembly(dso[:-4])
    if dso == "nginx" or dso.endswith("/nginx"):
        return "nginx"
    return "libc" if dso.startswith(LIBC) else "runtime" if dso.startswith(RUNTIME_LIBRARIES) else "other"


def classify_report(server, scenario, sent, report_path, split_csv, top_txt):
    symbols = []   # (samples, category, dso, symbol)
    with open(report_path, errors="replace") as report:
        for m in filter(None, map(REPORT_LINE.match, report)):
            symbols.append((int(m[1]), classify(m[2], m[3].strip()), m[2], m[3].strip()))
    samples = {c: sum(n for n, category, _, _ in symbols if category == c) for c in CATEGORIES}
    if (total := sum(samples.values())) == 0:
        sys.exit(f"profile_report.py: no samples in {report_path} for {server} {scenario}")
    with open(split_csv, "a", newline="") as out:
        csv.writer(out).writerows([server, scenario, sent, c, n] for c, n in samples.items())
    with open(top_txt, "a") as out:
        out.write(f"== {server} {scenario}: {total} samples of cpu-clock at {RECORD_FREQUENCY_HZ} Hz, "
                  f"{sent} responses; top {TOP_SYMBOLS} symbols (self)\n")
        for n, category, dso, symbol in sorted(symbols, key=lambda s: -s[0])[:TOP_SYMBOLS]:
            out.write(f"{100 * n / total:6.2f}%  {category:<10} {dso:<28.28} {symbol[:160]}\n")
        out.write("\n")


def summary_tables(rows):
    lines = []
    for scenario, by_server in by_scenario(rows).items():
        cells = {s: server_rows[-1] for s, server_rows in by_server.items()}
        first = next(iter(cells.values()))
        big, counters = first["file"].endswith("MiB"), any(num(c["instructions"]) for c in cells.values())
        nginx_cpu = per_response(cells["nginx"], "task_clock_ms", 1000) if "nginx" in cells else None
        head = ["server", "responses/s", "CPU µs / response", "CPU vs nginx", "syscalls / response",
                "loop wake-ups (epoll_wait returns) / response", "context switches / response",
                "thread-pool work items / response"] + (["CPU s / GB"] if big else []) \
            + (["instructions / response", "cycles / response"] if counters else [])
        body = []
        for server, c in cells.items():
            cpu_us = per_response(c, "task_clock_ms", 1000)
            cols = [server, fmt(responses(c) / (num(c["duration_us"]) / 1e6), 0), fmt(cpu_us, 1),
                    quotient(cpu_us, nginx_cpu)] + [fmt(per_response(c, k)) for k in PER_RESPONSE]
            if big:
                gb = num(c["bytes"]) / 1e9
                cols.append(f"{num(c['task_clock_ms']) / 1000 / gb:.3f}" if gb else "–")
            body.append(cols + ([fmt(per_response(c, k), 0) for k in ("instructions", "cycles")] if counters else []))
        lines += [f"### {first['file']}, {first['connections']} connections (`{scenario}`)\n"] + table(head, body)
        lines.append("")
    return lines


def syscall_tables(rows, plain_rows):
    plain = {(r["scenario"], r["server"]): r for r in plain_rows}
    lines = []
    for scenario, by_server in by_scenario(rows).items():
        # {server: ({syscall: (calls, errors)}, responses)}, for the servers whose responses strace counted
        cells = {s: ({r["syscall"]: (num(r["calls"]), num(r["errors"]) or 0) for r in rs if r["syscall"] != "strace"},
                     [responses(r) for r in rs if r["syscall"] == "strace"][-1])
                 for s, rs in by_server.items() if any(r["syscall"] == "strace" for r in rs)}

        def weight(name):
            return max(calls.get(name, (0, 0))[0] / n for calls, n in cells.values())

        def per_call(s, name):
            (calls, errors), n = cells[s][0].get(name, (0, 0)), cells[s][1]
            return (fmt(calls / n, 3) if calls else "·") + (f" ({fmt(errors / n, 3)})" if errors else "")

        names = {name for calls, n in cells.values() for name, (c, _) in calls.items()
                 if c / n >= SYSCALL_MIN_PER_RESPONSE}
        names = sorted(names, key=lambda name: (-round(weight(name), 3), name))
        lines.append(f"#### `{scenario}`: calls per response (strace -c -f; errors in brackets)\n")
        lines += table(["syscall", *cells], [[name] + [per_call(s, name) for s in cells] for name in names])
        cachestat = [fmt(per_response(plain[(scenario, s)], "cachestat"), 3)
                     if num(plain.get((scenario, s), {}).get("cachestat")) else "·" for s in cells]
        if any(c != "·" for c in cachestat):
            lines.append(row(["cachestat (plain pass, tracepoint: strace 6.1 leaves it out)"] + cachestat))
        totals = [fmt(sum(c for c, _ in calls.values()) / n) for calls, n in cells.values()]
        lines += [row(["**total** (strace's, without cachestat)"] + totals),
                  row(["responses under strace"] + [f"{n:.0f}" for _, n in cells.values()]), ""]
    return lines


def split_tables(rows):
    lines = []
    for scenario, by_server in by_scenario(rows).items():
        # {server: ({category: samples}, responses)}
        cells = {s: ({r["category"]: num(r["samples"]) for r in rs}, num(rs[-1]["requests"]))
                 for s, rs in by_server.items()}
        used = [k for k in CATEGORIES if any(c.get(k) for c, _ in cells.values())]
        body = []
        for s, (c, n) in cells.items():
            total, ours = sum(c.values()), c.get("ours", 0)
            shares = [f"{100 * ours / total:.1f}%", f"{100 * ours / (total - c.get('kernel', 0)):.1f}%"] \
                if s != "nginx" else ["–", "–"]
            body.append([s] + [f"{micros(c.get(k, 0), n)} ({100 * c.get(k, 0) / total:.1f}%)" for k in used]
                        + [micros(total, n)] + shares)
        lines.append(f"#### `{scenario}`: CPU per response by whose code ran (perf record, cpu-clock; µs per "
                     "response, share of the total)\n")
        lines += table(["server"] + [CATEGORIES[k] for k in used] + ["total µs", "ours / total", "ours / user space"],
                       body) + [""]
    return lines


def micros(samples, n):
    """µs of CPU per response from perf record's samples."""
    return fmt(samples / RECORD_FREQUENCY_HZ * 1e6 / n, 1)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--classify":
        classify_report(*sys.argv[2:8])
        return
    name = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--name" else "profile"
    base = os.path.join(RESULTS, name)
    plain, syscalls, split = (read_rows(f"{base}{part}.csv", optional=True) for part in ("", "-syscalls", "-split"))
    if not plain:
        sys.exit(f"profile_report.py: results/{name}.csv is missing; run perf/profile.sh")
    meta = read_meta(f"{base}-meta.txt", optional=True)
    m = defaultdict(lambda: "?", meta)   # "?" for what the meta file lacks
    lines = [
        "# The cost map of a response (perf/profile.sh)", "",
        f"Run {m['date']} on {m['cpu']} ({m['cores']} cores), {m['kernel']}, .NET {m['dotnet']}, {m['nginx']}, "
        f"{m['strace']}, {m['perf']}.",
        f"Commit {m['commit']}; last commit that changed `src/`: {m['src_commit']}. Load average at start "
        f"{m['loadavg_start']}, at end {m['loadavg_end']} (2 cores; quiet at start: "
        f"{m['quiet_at_start']}). Hardware counters: {m['hardware_counters']}. Run took "
        f"{m['run_seconds']} s; {m['duration_s']} s of wrk per pass. Warm-up: {m['warmup']}.", "",
        "Every server on core 0, wrk (one thread) on core 1. Each figure is divided by the requests wrk sent in the "
        "same pass (`perf/counted.lua`), or for 1 MiB and 32 MiB by the bytes wrk read over the file's size. Compare "
        "servers within this run only; absolute numbers move with the load of the shared machine.", "",
        "## Per response: CPU, syscalls, wake-ups, context switches, pool hops", "",
        "From the plain pass (no strace): CPU = `perf stat -e task-clock -p` (all threads of the process, nginx: "
        "master + worker); syscalls = `raw_syscalls:sys_enter`; wake-ups = `syscalls:sys_exit_epoll_wait` (every "
        "loop: ours, Kestrel's socket engine, nginx's worker); context switches = voluntary + nonvoluntary of "
        "`/proc/PID/task/*/status`, before and after; work items = the sample's `GET /perf/threadpool` "
        "(`ThreadPool.CompletedWorkItemCount`), before and after (its own request adds one or two items per run, not "
        "per response).", ""] + summary_tables(plain)
    if split:
        lines += [
            "## 4 KiB: whose code the CPU time goes to", "",
            "`perf record -e cpu-clock -F 2000 -p PID` over one wrk run, self time of each sample by where it fell: "
            "JIT-compiled methods by their declaring assembly (from `/tmp/perf-PID.map`), ReadyToRun code by its "
            "image, native code by its library. The kernel column is every syscall, interrupt and softirq (including "
            "the TCP work of loopback for both ends that lands on core 0). A sample is self time: a BCL method that "
            "our code calls counts as BCL. Top symbols of each: `profile-top.txt`. #13's target: ours ≤ 10% of the "
            "total.", ""] + split_tables(split)
    if syscalls:
        lines += [
            "## Syscalls by name, per response", "",
            "`strace -c -f -p PID` (nginx: master and worker) attached over one wrk run. strace slows every syscall "
            "by tens of µs, so loops see more ready events per wake-up and the pool spins differently: epoll_wait and "
            "sched_yield counts here are inflated or deflated against the plain pass above; the per-response counts "
            "of the send path (sendfile, writev, recvfrom, openat, statx…) are what this table is for. strace 6.1 "
            "predates cachestat(2) (451) and leaves it out of its -c table, so it is counted in the plain pass with "
            "the `syscalls:sys_enter_cachestat` tracepoint instead.", ""] + syscall_tables(syscalls, plain)
    if os.path.exists(f"{base}-commands.txt"):
        lines += ["## Exact commands", "",
                  "The client lines name the splice server's port; every server got the same command on its own "
                  "port. PID is the server's (nginx: master and worker).", "", "```",
                  meta.get('command', 'perf/profile.sh'),
                  *read_lines(f"{base}-commands.txt"), "```", ""]
    reading = "\n\n## Reading\n\n(to be written)\n"
    if os.path.exists(f"{base}.md"):
        with open(f"{base}.md") as f:
            reading = f.read().partition(READING_MARKER)[2] or reading
    with open(f"{base}.md", "w") as out:
        out.write("\n".join(lines) + "\n" + READING_MARKER + reading)


if __name__ == "__main__":
    main()
