"""perf/profile_report.py [--name NAME]: results/NAME.md (default profile) from perf/profile.sh's NAME.csv,
NAME-syscalls.csv, NAME-meta.txt and NAME-commands.txt; keeps the old NAME.md's text below READING_MARKER."""
import os
import sys
from collections import defaultdict
from pathlib import Path
sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import (RESULTS, fmt, name_arg, num, per_response, quotient, read_lines, read_meta, read_rows,  # noqa: E402
                    responses, row, table)

READING_MARKER = "<!-- reading: kept when profile_report.py redraws the tables above -->"
SYSCALL_MIN_PER_RESPONSE = 0.005    # syscalls rarer than this per response (in every server) are left out
SERVER_ORDER = ["splice", "sockets", "nginx"]
PER_RESPONSE = ["syscalls", "epoll_wait_returns", "context_switches", "pool_work_items"]   # summary table columns
COUNTERS = ["instructions", "cycles"]   # and these where the machine has hardware counters
HEADER = """# The cost map of a response (perf/profile.sh)

Run {date} on {cpu} ({cores} cores), {kernel}, .NET {dotnet}, {nginx}, {strace}, {perf}.
Commit {commit}; last commit that changed `src/`: {src_commit}. Load average at start {loadavg_start}, at end \
{loadavg_end} (2 cores; quiet at start: {quiet_at_start}). Hardware counters: {hardware_counters}. Run took \
{run_seconds} s; {duration_s} s of wrk per pass. Warm-up: {warmup}.

Every server on core 0, wrk (one thread) on core 1. Each figure is divided by the requests wrk sent in the same pass \
(`perf/counted.lua`), or for 1 MiB and 32 MiB by the bytes wrk read over the file's size. Compare servers within this \
run only; absolute numbers move with the load of the shared machine.

## Per response: CPU, syscalls, wake-ups, context switches, pool hops

From the plain pass (no strace): CPU = `perf stat -e task-clock -p` (all threads of the process, nginx: master + \
worker); syscalls = `raw_syscalls:sys_enter`; wake-ups = `syscalls:sys_exit_epoll_wait` (every loop: ours, Kestrel's \
socket engine, nginx's worker); context switches = voluntary + nonvoluntary of `/proc/PID/task/*/status`, before and \
after; work items = the sample's `GET /perf/threadpool` (`ThreadPool.CompletedWorkItemCount`), before and after (its \
own request adds one or two items per run, not per response).
"""
SYSCALLS = """## Syscalls by name, per response

`strace -c -f -p PID` (nginx: master and worker) attached over one wrk run. strace slows every syscall by tens of µs, \
so loops see more ready events per wake-up and the pool spins differently: epoll_wait and sched_yield counts here are \
inflated or deflated against the plain pass above; the per-response counts of the send path (sendfile, writev, \
recvfrom, openat, statx…) are what this table is for. strace 6.1 predates cachestat(2) (451) and leaves it out of its \
-c table, so it is counted in the plain pass with the `syscalls:sys_enter_cachestat` tracepoint instead.
"""


def by_scenario(rows):
    """{scenario: {server: [its rows]}}, scenarios in first-seen order, servers in SERVER_ORDER (others last)."""
    out = {}
    for r in rows:
        out.setdefault(r["scenario"], {}).setdefault(r["server"], []).append(r)
    return {sc: {s: by[s] for s in sorted(by, key=lambda s: (SERVER_ORDER + [s]).index(s))} for sc, by in out.items()}


if __name__ == "__main__":
    name = name_arg("profile")
    base = os.path.join(RESULTS, name)
    plain, syscalls = (read_rows(f"{base}{part}.csv", optional=True) for part in ("", "-syscalls"))
    if not plain:
        sys.exit(f"profile_report.py: results/{name}.csv is missing; run perf/profile.sh")
    meta = read_meta(f"{base}-meta.txt", optional=True)
    lines = [HEADER.format_map(defaultdict(lambda: "?", meta))]
    for scenario, by_server in by_scenario(plain).items():   # per response, from the last plain pass of each server
        cells = {s: server_rows[-1] for s, server_rows in by_server.items()}
        first = next(iter(cells.values()))
        big, counters = first["file"].endswith("MiB"), any(num(c["instructions"]) for c in cells.values())
        nginx_cpu = per_response(cells["nginx"], "task_clock_ms", 1000) if "nginx" in cells else None
        body = []
        for server, c in cells.items():
            cpu = per_response(c, "task_clock_ms", 1000)
            body.append([server, fmt(responses(c) / (num(c["duration_us"]) / 1e6), 0), fmt(cpu, 1),
                         quotient(cpu, nginx_cpu)] + [fmt(per_response(c, k)) for k in PER_RESPONSE]
                        + ([f"{num(c['task_clock_ms']) / 1000 / gb:.3f}" if (gb := num(c["bytes"]) / 1e9) else "–"]
                           if big else []) + [fmt(per_response(c, k), 0) for k in COUNTERS if counters])
        lines += [f"### {first['file']}, {first['connections']} connections (`{scenario}`)\n"] + table(
            ["server", "responses/s", "CPU µs / response", "CPU vs nginx", "syscalls / response",
             "loop wake-ups (epoll_wait returns) / response", "context switches / response",
             "thread-pool work items / response"] + (["CPU s / GB"] if big else [])
            + [f"{k} / response" for k in COUNTERS if counters], body) + [""]
    lines += [SYSCALLS] if syscalls else []
    plain_of = {(r["scenario"], r["server"]): r for r in plain}
    for scenario, by_server in by_scenario(syscalls).items():
        # {server: ({syscall: (calls, errors)}, responses)}, for the servers whose responses strace counted
        cells = {s: ({r["syscall"]: (num(r["calls"]), num(r["errors"]) or 0) for r in rs if r["syscall"] != "strace"},
                     [responses(r) for r in rs if r["syscall"] == "strace"][-1])
                 for s, rs in by_server.items() if any(r["syscall"] == "strace" for r in rs)}

        def per_call(s, name):
            (calls, errors), n = cells[s][0].get(name, (0, 0)), cells[s][1]
            return (fmt(calls / n, 3) if calls else "·") + (f" ({fmt(errors / n, 3)})" if errors else "")
        weight = {name: max(calls.get(name, (0, 0))[0] / n for calls, n in cells.values())   # its most per response
                  for calls, _ in cells.values() for name in calls}
        names = sorted((x for x in weight if weight[x] >= SYSCALL_MIN_PER_RESPONSE),
                       key=lambda x: (-round(weight[x], 3), x))
        cachestat = [fmt(per_response(plain_of[(scenario, s)], "cachestat"), 3)
                     if num(plain_of.get((scenario, s), {}).get("cachestat")) else "·" for s in cells]
        lines += [f"#### `{scenario}`: calls per response (strace -c -f; errors in brackets)\n"] + table(
            ["syscall", *cells], [[name] + [per_call(s, name) for s in cells] for name in names])
        if any(c != "·" for c in cachestat):
            lines.append(row(["cachestat (plain pass, tracepoint: strace 6.1 leaves it out)"] + cachestat))
        lines += [row(["**total** (strace's, without cachestat)"]
                      + [fmt(sum(c for c, _ in calls.values()) / n) for calls, n in cells.values()]),
                  row(["responses under strace"] + [f"{n:.0f}" for _, n in cells.values()]), ""]
    if os.path.exists(f"{base}-commands.txt"):
        lines += ["## Exact commands", "", "The client lines name the splice server's port; every server got the same "
                  "command on its own port. PID is the server's (nginx: master and worker).", "", "```",
                  meta.get("command", "perf/profile.sh"), *read_lines(f"{base}-commands.txt"), "```", ""]
    old = Path(f"{base}.md").read_text() if os.path.exists(f"{base}.md") else ""
    reading = old.partition(READING_MARKER)[2] or "\n\n## Reading\n\n(to be written)\n"
    Path(f"{base}.md").write_text("\n".join(lines) + "\n" + READING_MARKER + reading)
