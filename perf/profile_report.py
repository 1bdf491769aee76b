#!/usr/bin/env python3
"""perf/profile_report.py — the tables of perf/results/profile.md, from the raw files perf/profile.sh writes.

    python3 perf/profile_report.py [--name NAME]   redraws results/NAME.md (default profile) from results/profile*.{csv,txt}; the
                                         text below the READING_MARKER line of the old profile.md is kept
    python3 perf/profile_report.py --classify SERVER SCENARIO RESPONSES REPORT SPLIT_CSV TOP_TXT
                                         (profile.sh) splits one `perf report --sort dso,sym` by whose code
                                         each sample fell in; appends to SPLIT_CSV and TOP_TXT
"""
import csv
import os
import re
import sys
from collections import defaultdict

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
READING_MARKER = "<!-- reading: kept when profile_report.py redraws the tables above -->"
RECORD_FREQUENCY_HZ = 2000          # profile.sh's perf record -F: one sample is 1/2000 s of CPU
TOP_SYMBOLS = 30                    # symbols listed per server in profile-top.txt
SYSCALL_MIN_PER_RESPONSE = 0.005    # syscalls rarer than this per response (in every server) are left out of the tables

# Whose code: the order of the table's columns. "bcl" is managed System.* code; "runtime" is the native
# runtime (coreclr with GC and type system, the JIT, System.Native, the dynamic linker, stubs). "libc" is
# mostly its syscall wrappers: on this VM, cpu-clock samples of time spent in a syscall with interrupts off
# land on the wrapper's return or on the kernel's pvm_irq_enable, so libc + kernel is the syscalls' cost.
CATEGORIES = ["ours", "kestrel", "aspnetcore", "bcl", "runtime", "libc", "nginx", "kernel", "other"]
CATEGORY_TITLE = {
    "ours": "SpliceTransport (ours)",
    "kestrel": "Kestrel",
    "aspnetcore": "other ASP.NET Core + app",
    "bcl": "BCL (System.*)",
    "runtime": "runtime native (coreclr, GC, JIT, stubs)",
    "libc": "libc (syscall wrappers)",
    "nginx": "nginx",
    "kernel": "kernel",
    "other": "unresolved",
}
RUNTIME_LIBRARIES = ("libcoreclr.so", "libclrjit.so", "libSystem.Native.so", "ld-linux", "libstdc++",
                     "libgcc", "libm.so", "[vdso]", "libclrgc", "libSystem.")
LIBC = ("libc.so", "libc-", "libpthread")
FILE_BYTES = {"4KiB": 4096, "64KiB": 65536, "1MiB": 1048576, "32MiB": 33554432}
LARGE_FILE_BYTES = 1048576
SERVER_ORDER = ["splice", "sockets", "nginx", "splice-spin0", "splice-inline"]


def classify_assembly(assembly):
    """The bucket of a managed assembly (or of an R2R image, by its file name without .dll)."""
    if assembly.startswith("SpliceTransport"):
        return "ours"
    if assembly.startswith("Microsoft.AspNetCore.Server.Kestrel"):
        return "kestrel"
    if assembly.startswith(("Microsoft.AspNetCore.", "Microsoft.Extensions.", "Microsoft.Net.Http.Headers",
                            "StaticFileServer")):
        return "aspnetcore"
    if assembly.startswith(("System", "mscorlib", "netstandard")):
        return "bcl"
    return None


def classify(dso, symbol):
    if dso.startswith("[kernel") or (dso.startswith("[") and not dso.startswith(("[JIT]", "[vdso]", "[unknown]"))):
        return "kernel"
    if dso.startswith("[JIT]") or dso.startswith("perf-"):
        # "instance void [Assembly] Namespace.Type::Method(...)[Tier]": the declaring type's assembly is the
        # last "[...] " before the first "::" (parameters, which can name other assemblies, come after it).
        head = symbol.split("::", 1)[0]
        assemblies = re.findall(r"\[([^\]\s]+)\] ", head)
        if assemblies:
            return classify_assembly(assemblies[-1]) or "other"
        return "runtime"   # stubs (IL_STUB_PInvoke, dispatch and precode stubs) without a declaring assembly
    if dso.endswith(".dll"):
        return classify_assembly(dso[:-4]) or "other"
    if dso == "nginx" or dso.endswith("/nginx"):
        return "nginx"
    if dso.startswith(LIBC):
        return "libc"
    if dso.startswith(RUNTIME_LIBRARIES):
        return "runtime"
    return "other"


def classify_report(server, scenario, responses, report_path, split_csv, top_txt):
    samples = defaultdict(int)
    symbols = []
    row = re.compile(r"^\s*(\d+)\s+(\S+(?: tid \d+)?)\s+\[[.kgu]\]\s+(.*)$")
    with open(report_path, errors="replace") as report:
        for line in report:
            m = row.match(line)
            if not m:
                continue
            count, dso, symbol = int(m.group(1)), m.group(2), m.group(3).strip()
            category = classify(dso, symbol)
            samples[category] += count
            symbols.append((count, category, dso, symbol))
    total = sum(samples.values())
    if total == 0:
        sys.exit(f"profile_report.py: no samples in {report_path} for {server} {scenario}")
    with open(split_csv, "a", newline="") as out:
        writer = csv.writer(out)
        for category in CATEGORIES:
            writer.writerow([server, scenario, responses, category, samples.get(category, 0)])
    symbols.sort(key=lambda s: -s[0])
    with open(top_txt, "a") as out:
        out.write(f"== {server} {scenario}: {total} samples of cpu-clock at {RECORD_FREQUENCY_HZ} Hz, "
                  f"{responses} responses; top {TOP_SYMBOLS} symbols (self)\n")
        for count, category, dso, symbol in symbols[:TOP_SYMBOLS]:
            out.write(f"{100 * count / total:6.2f}%  {category:<10} {dso:<28.28} {symbol[:160]}\n")
        out.write("\n")


# ------------------------------------------------------------------------------------------------ report

def read_csv(name):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


NAME = "profile"   # results/NAME.md from results/NAME.csv, NAME-syscalls.csv, ...; --name changes it


def read_meta():
    meta = {}
    path = os.path.join(RESULTS, f"{NAME}-meta.txt")
    if os.path.exists(path):
        for line in open(path):
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt(value, digits=2):
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


def responses(row):
    """Responses of one pass: the requests wrk sent (counted.lua; the server handled the last one on each
    connection although wrk stopped before counting its response), or for files of 1 MiB and more the bytes wrk
    read over the file's size (downloads still running when wrk stops cost CPU and syscalls too; headers are
    < 0.03% of the bytes)."""
    size = FILE_BYTES.get(row.get("file") or row["scenario"].split("-")[0])
    if size and size >= LARGE_FILE_BYTES and num(row.get("bytes")):
        return num(row["bytes"]) / size
    return num(row.get("sent")) or num(row["requests"])


def ordered(servers):
    return sorted(servers, key=lambda s: SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)


def summary_tables(rows, lines):
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    for scenario in scenarios:
        cells = {r["server"]: r for r in rows if r["scenario"] == scenario}
        sample = next(iter(cells.values()))
        size = sample["file"]
        big = size.endswith("MiB")
        lines.append(f"### {size}, {sample['connections']} connections (`{scenario}`)\n")
        header = ["server", "responses/s", "CPU µs / response", "CPU vs nginx", "syscalls / response",
                  "loop wake-ups (epoll_wait returns) / response", "context switches / response",
                  "thread-pool work items / response"]
        if big:
            header.append("CPU s / GB")
        if any(num(c["instructions"]) for c in cells.values()):
            header += ["instructions / response", "cycles / response"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        nginx_cpu = None
        if "nginx" in cells:
            n = cells["nginx"]
            nginx_cpu = num(n["task_clock_ms"]) * 1000 / responses(n)
        for server in ordered(cells):
            c = cells[server]
            n = responses(c)
            secs = num(c["duration_us"]) / 1e6
            cpu_us = num(c["task_clock_ms"]) * 1000 / n if num(c["task_clock_ms"]) is not None else None
            per = lambda key: (num(c[key]) / n if num(c[key]) is not None else None)
            cols = [server, fmt(n / secs, 0), fmt(cpu_us, 1), ratio(cpu_us, nginx_cpu), fmt(per("syscalls")),
                    fmt(per("epoll_wait_returns")), fmt(per("context_switches")),
                    fmt(per("pool_work_items")) if c["pool_work_items"] else "–"]
            if big:
                gb = num(c["bytes"]) / 1e9
                cols.append(f"{num(c['task_clock_ms']) / 1000 / gb:.3f}" if gb else "–")
            if "instructions / response" in header:
                cols += [fmt(per("instructions"), 0), fmt(per("cycles"), 0)]
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")


def syscall_tables(rows, plain_rows, lines):
    plain = {(r["scenario"], r["server"]): r for r in plain_rows}
    by_cell = defaultdict(dict)
    counted = {}
    for r in rows:
        key = (r["scenario"], r["server"])
        if r["syscall"] == "strace":
            counted[key] = responses(r)
            continue
        by_cell[key][r["syscall"]] = (num(r["calls"]), num(r["errors"]) or 0)
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    for scenario in scenarios:
        servers = ordered({s for (sc, s) in counted if sc == scenario})
        names = set()
        for s in servers:
            n = counted[(scenario, s)]
            names |= {name for name, (calls, _) in by_cell[(scenario, s)].items() if calls / n >= SYSCALL_MIN_PER_RESPONSE}
        def weight(name):
            return max(by_cell[(scenario, s)].get(name, (0, 0))[0] / counted[(scenario, s)] for s in servers)
        names = sorted(names, key=lambda name: (-round(weight(name), 3), name))
        lines.append(f"#### `{scenario}`: calls per response (strace -c -f; errors in brackets)\n")
        lines.append("| syscall | " + " | ".join(servers) + " |")
        lines.append("|---|" + "---|" * len(servers))
        for name in names:
            cols = []
            for s in servers:
                calls, errors = by_cell[(scenario, s)].get(name, (0, 0))
                n = counted[(scenario, s)]
                cell = fmt(calls / n, 3) if calls else "·"
                if errors:
                    cell += f" ({fmt(errors / n, 3)})"
                cols.append(cell)
            lines.append(f"| {name} | " + " | ".join(cols) + " |")
        cachestat = []
        for s in servers:
            row = plain.get((scenario, s))
            calls = num(row.get("cachestat")) if row else None
            cachestat.append(fmt(calls / responses(row), 3) if calls else "·")
        if any(c != "·" for c in cachestat):
            lines.append("| cachestat (plain pass, tracepoint: strace 6.1 leaves it out) | " + " | ".join(cachestat) + " |")
        totals = []
        for s in servers:
            n = counted[(scenario, s)]
            totals.append(fmt(sum(c for c, _ in by_cell[(scenario, s)].values()) / n))
        lines.append("| **total** (strace's, without cachestat) | " + " | ".join(totals) + " |")
        lines.append("| responses under strace | " + " | ".join(f"{counted[(scenario, s)]:.0f}" for s in servers) + " |")
        lines.append("")


def split_tables(rows, lines):
    cells = defaultdict(dict)
    counted = {}
    for r in rows:
        key = (r["scenario"], r["server"])
        cells[key][r["category"]] = num(r["samples"])
        counted[key] = num(r["requests"])
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    for scenario in scenarios:
        servers = ordered({s for (sc, s) in cells if sc == scenario})
        used = [c for c in CATEGORIES if any(cells[(scenario, s)].get(c) for s in servers)]
        lines.append(f"#### `{scenario}`: CPU per response by whose code ran (perf record, cpu-clock; µs per response, share of the total)\n")
        lines.append("| server | " + " | ".join(CATEGORY_TITLE[c] for c in used) + " | total µs | ours / total | ours / user space |")
        lines.append("|---|" + "---|" * (len(used) + 3))
        for s in servers:
            c = cells[(scenario, s)]
            total = sum(c.values())
            n = counted[(scenario, s)]
            us = lambda samples: samples / RECORD_FREQUENCY_HZ * 1e6 / n
            cols = [f"{fmt(us(c.get(k, 0)), 1)} ({100 * c.get(k, 0) / total:.1f}%)" for k in used]
            user = total - c.get("kernel", 0)
            ours = c.get("ours", 0)
            dotnet = s != "nginx"
            lines.append(f"| {s} | " + " | ".join(cols) + f" | {fmt(us(total), 1)} | "
                         + (f"{100 * ours / total:.1f}% | {100 * ours / user:.1f}%" if dotnet else "– | –") + " |")
        lines.append("")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--classify":
        server, scenario, responses, report, split_csv, top_txt = sys.argv[2:8]
        classify_report(server, scenario, responses, report, split_csv, top_txt)
        return
    meta = read_meta()
    global NAME
    if len(sys.argv) > 2 and sys.argv[1] == "--name":
        NAME = sys.argv[2]
    plain = read_csv(f"{NAME}.csv")
    syscalls = read_csv(f"{NAME}-syscalls.csv")
    split = read_csv(f"{NAME}-split.csv")
    if not plain:
        sys.exit(f"profile_report.py: results/{NAME}.csv is missing; run perf/profile.sh")
    lines = ["# The cost map of a response (perf/profile.sh)", ""]
    lines.append(f"Run {meta.get('date', '?')} on {meta.get('cpu', '?')} ({meta.get('cores', '?')} cores), "
                 f"{meta.get('kernel', '?')}, .NET {meta.get('dotnet', '?')}, {meta.get('nginx', '?')}, "
                 f"{meta.get('strace', '?')}, {meta.get('perf', '?')}.")
    lines.append(f"Commit {meta.get('commit', '?')}; last commit that changed `src/`: {meta.get('src_commit', '?')}. "
                 f"Load average at start {meta.get('loadavg_start', '?')}, at end {meta.get('loadavg_end', '?')} "
                 f"(the machine is shared: 2 cores, another helper builds and tests on it; quiet at start: "
                 f"{meta.get('quiet_at_start', '?')}). "
                 f"Hardware counters: {meta.get('hardware_counters', '?')}. Run took {meta.get('run_seconds', '?')} s; "
                 f"{meta.get('duration_s', '?')} s of wrk per pass. Warm-up: {meta.get('warmup', '?')}.")
    lines.append("")
    lines.append("Every server on core 0, wrk (one thread) on core 1. Each figure is divided by the requests wrk "
                 "sent in the same pass (`perf/counted.lua`), or for 1 MiB and 32 MiB by the bytes wrk read over the "
                 "file's size. Compare servers within this run only; absolute numbers move with the "
                 "load of the shared machine.")
    lines.append("")
    lines.append("## Per response: CPU, syscalls, wake-ups, context switches, pool hops")
    lines.append("")
    lines.append("From the plain pass (no strace): CPU = `perf stat -e task-clock -p` (all threads of the process, "
                 "nginx: master + worker); syscalls = `raw_syscalls:sys_enter`; wake-ups = "
                 "`syscalls:sys_exit_epoll_wait` (every loop: ours, Kestrel's socket engine, nginx's worker); "
                 "context switches = voluntary + nonvoluntary of `/proc/PID/task/*/status`, before and after; "
                 "work items = the sample's `GET /perf/threadpool` (`ThreadPool.CompletedWorkItemCount`), "
                 "before and after (its own request adds one or two items per run, not per response).")
    lines.append("")
    summary_tables(plain, lines)
    if split:
        lines.append("## 4 KiB: whose code the CPU time goes to")
        lines.append("")
        lines.append("`perf record -e cpu-clock -F 2000 -p PID` over one wrk run, self time of each sample by "
                     "where it fell: JIT-compiled methods by their declaring assembly (from `/tmp/perf-PID.map`), "
                     "ReadyToRun code by its image, native code by its library. The kernel column is every "
                     "syscall, interrupt and softirq (including the TCP work of loopback for both ends that lands "
                     "on core 0). A sample is self time: a BCL method that our code calls counts as BCL. Top "
                     "symbols of each: `profile-top.txt`. #13's target: ours ≤ 10% of the total.")
        lines.append("")
        split_tables(split, lines)
    if syscalls:
        lines.append("## Syscalls by name, per response")
        lines.append("")
        lines.append("`strace -c -f -p PID` (nginx: master and worker) attached over one wrk run. strace slows "
                     "every syscall by tens of µs, so loops see more ready events per wake-up and the pool spins "
                     "differently: epoll_wait and sched_yield counts here are inflated or deflated against the "
                     "plain pass above; the per-response counts of the send path (sendfile, writev, recvfrom, "
                     "openat, statx…) are what this table is for. strace 6.1 predates cachestat(2) (451) and "
                     "leaves it out of its -c table, so it is counted in the plain pass with the "
                     "`syscalls:sys_enter_cachestat` tracepoint instead.")
        lines.append("")
        syscall_tables(syscalls, plain, lines)
    commands = os.path.join(RESULTS, f"{NAME}-commands.txt")
    if os.path.exists(commands):
        lines.append("## Exact commands")
        lines.append("")
        lines.append("The client lines name the splice server's port; every server got the same command on its own "
                     "port. PID is the server's (nginx: master and worker).")
        lines.append("")
        lines.append("```")
        lines.append(f"flock /work/perf.lock {meta.get('command', 'perf/profile.sh')}")
        lines.extend(open(commands).read().rstrip("\n").split("\n"))
        lines.append("```")
        lines.append("")
    path = os.path.join(RESULTS, f"{NAME}.md")
    reading = ""
    if os.path.exists(path):
        old = open(path).read()
        if READING_MARKER in old:
            reading = old.split(READING_MARKER, 1)[1]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n" + READING_MARKER + (reading if reading else "\n\n## Reading\n\n(to be written)\n"))


if __name__ == "__main__":
    main()
