#!/usr/bin/env python3
"""perf/ab_report.py — results/ab-NAME.md and the verdict, from the raw files perf/ab.sh writes.

    python3 perf/ab_report.py --name NAME   reads results/ab-NAME.csv, ab-NAME-rounds.csv, ab-NAME-meta.txt and
                                            ab-NAME-commands.txt; writes results/ab-NAME.md and prints its
                                            table and verdict

Per response (profile_report.responses: the requests wrk sent, or for 1 MiB the bytes read over the file size),
for each build: the median over the rounds with (min–max), and B ÷ A of the medians. The verdict: B is kept
when its counts (thread-pool work items, system calls, voluntary context switches) fall — at least one by
more than COUNT_TOLERANCE and none rising by more than it — and its CPU per response is below A's in most
rounds (more than half).
"""
import csv
import os
import statistics
import sys

sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_report import num, responses  # noqa: E402  (perf/profile.sh's division per response)
from report import cell  # noqa: E402  (perf/run.sh's "median (min–max)" cell)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COUNT_TOLERANCE = 0.01   # a count whose median moves by less than 1% has not changed

# key, row label; the counts are what the verdict reads next to CPU.
FIGURES = [
    ("cpu_us", "CPU µs / response (task-clock, all threads)"),
    ("pool", "thread-pool work items / response"),
    ("syscalls", "system calls / response (raw_syscalls:sys_enter, all threads, spinning included)"),
    ("voluntary", "voluntary context switches / response"),
    ("rps", "requests/s"),
]
COUNTS = [("pool", "work items"), ("syscalls", "syscalls"), ("voluntary", "voluntary context switches")]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_meta(path):
    meta = {}
    for line in open(path):
        key, _, value = line.rstrip("\n").partition("=")
        meta[key] = value
    return meta


def figures(row):
    n = responses(row)

    def per(column):
        value = num(row.get(column))
        return value / n if value is not None and n else None

    secs = num(row["duration_us"]) / 1e6
    return {
        "cpu_us": per("task_clock_ms") * 1000 if per("task_clock_ms") is not None else None,
        "pool": per("pool_work_items"),
        "syscalls": per("syscalls"),
        "voluntary": per("voluntary_context_switches"),
        "rps": num(row["requests"]) / secs if secs else None,
    }


def median_of(by_round, key):
    vals = [f[key] for f in by_round.values() if f[key] is not None]
    return statistics.median(vals) if vals else None


def cell_of(by_round, key):
    vals = [f[key] for f in by_round.values() if f[key] is not None]
    return cell(vals) if vals else "n/a"


def ratio_text(a, b):
    return f"{b / a:.3f}×" if a and b is not None else "n/a"


def verdict(data, rounds):
    a, b = data["A"], data["B"]
    falls, rises, same, missing = [], [], [], []
    for key, label in COUNTS:
        ma, mb = median_of(a, key), median_of(b, key)
        if not ma or mb is None:
            missing.append(label)
            continue
        r = mb / ma
        text = f"{label} {r:.3f}×"
        if r < 1 - COUNT_TOLERANCE:
            falls.append(text)
        elif r > 1 + COUNT_TOLERANCE:
            rises.append(text)
        else:
            same.append(text)
    paired = [r for r in rounds if r in a and r in b and a[r]["cpu_us"] is not None and b[r]["cpu_us"] is not None]
    lower = sum(1 for r in paired if b[r]["cpu_us"] < a[r]["cpu_us"])
    most = 2 * lower > len(paired)
    cpu = (f"B's CPU per response below A's in {lower} of {len(paired)} rounds "
           f"(medians {ratio_text(median_of(a, 'cpu_us'), median_of(b, 'cpu_us'))})")
    counts = "; ".join(x for x in [
        "fall: " + ", ".join(falls) if falls else "",
        "rise: " + ", ".join(rises) if rises else "",
        "unchanged (±1%): " + ", ".join(same) if same else "",
        "n/a: " + ", ".join(missing) if missing else ""] if x)
    keep = bool(falls) and not rises and most
    reasons = []
    if rises:
        reasons.append("a count rose")
    elif not falls:
        reasons.append("no count fell")
    if not most:
        reasons.append("CPU per response not lower in most rounds")
    head = "KEEP B" if keep else "DO NOT KEEP B (" + "; ".join(reasons) + ")"
    return f"verdict: {head} — counts {counts}; {cpu}", lower, len(paired)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "--name":
        sys.exit("usage: python3 perf/ab_report.py --name NAME")
    name = sys.argv[2]
    base = os.path.join(RESULTS, f"ab-{name}")
    meta = read_meta(f"{base}-meta.txt")
    rows = read_csv(f"{base}.csv")
    round_rows = read_csv(f"{base}-rounds.csv")
    commands = open(f"{base}-commands.txt").read().rstrip("\n")
    build_of = {meta["server_A"]: "A", meta["server_B"]: "B"}

    data = {"A": {}, "B": {}}
    for row in rows:
        data[build_of[row["server"]]][int(row["pass"].removeprefix("round"))] = figures(row)
    rounds = sorted({int(r["round"]) for r in round_rows})
    info = {(int(r["round"]), r["build"]): r for r in round_rows}
    order = {}
    for r in round_rows:
        order.setdefault(int(r["round"]), []).append(r["build"])

    def title(b):
        return f"{b}: {meta[f'short_{b}']} ({meta[f'transport_{b}']})"

    table = [f"| | {title('A')} | {title('B')} | B ÷ A (medians) |", "|---|---|---|---|"]
    for key, label in FIGURES:
        table.append(f"| {label} | {cell_of(data['A'], key)} | {cell_of(data['B'], key)} | "
                     f"{ratio_text(median_of(data['A'], key), median_of(data['B'], key))} |")
    line, lower, paired = verdict(data, rounds)
    table.append(f"| rounds in which B's CPU / response was below A's | | | {lower} of {paired} |")

    smoke = meta.get("smoke") == "1"
    if smoke:
        line += " [smoke run: checks the script; its figures and verdict mean nothing]"

    per_round = ["| round | order | A CPU µs / response | B CPU µs / response | B ÷ A | load average (1 min) at A's, B's start | "
                 "A warm-up req/s | B warm-up req/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        a, b = data["A"].get(r, {}).get("cpu_us"), data["B"].get(r, {}).get("cpu_us")
        per_round.append(
            f"| {r} | {' '.join(order[r])} | {a:.1f} | {b:.1f} | {b / a:.3f}× | "
            f"{info[(r, 'A')]['loadavg_1min']}, {info[(r, 'B')]['loadavg_1min']} | "
            f"{info[(r, 'A')]['warmup_requests_per_s']} | {info[(r, 'B')]['warmup_requests_per_s']} |"
            if a and b is not None else f"| {r} | {' '.join(order[r])} | – | – | – | | | |")

    scheme = meta["scheme"]
    path = "/plaintext" if meta["file"] == "plaintext" else f"/{meta['file']}.bin"
    lines = [f"# A/B: {meta['short_A']} against {meta['short_B']}, `{meta['scenario']}` (perf/ab.sh)", ""]
    if smoke:
        lines += ["**Smoke run** (`--smoke`): 1 round pair, 2 s of warm-up, 2 s measured. It checks the script; "
                  "the figures and the verdict mean nothing.", ""]
    lines += [
        f"Run {meta['date']} on {meta['cpu']} ({meta['cores']} cores), {meta['kernel']}, .NET SDK {meta['dotnet']}, "
        f"wrk {meta['wrk']}, {meta['perf']}; hardware counters: {meta['hardware_counters']}. "
        f"Load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']} (quiet at start: "
        f"{meta['quiet_at_start']}); {meta['run_seconds']} s in all. Script at {meta['script_commit']}.",
        "",
        "| build | ref | commit | last commit that changed `src/` | transport |",
        "|---|---|---|---|---|",
    ]
    for b in "AB":
        lines.append(f"| {b} | `{meta[f'ref_{b}']}` | {meta[f'sha_{b}']} | {meta[f'src_commit_{b}']} | "
                     f"{meta[f'transport_{b}']} |")
    lines += [
        "",
        f"Scenario `{meta['scenario']}`: `wrk -t1 -c{meta['connections']}` on {scheme}://127.0.0.1:{meta.get('port', '?')}{path}. "
        f"{meta['rounds']} round pair(s) in ABBA order (A B, B A, A B, …); in every round each build is a fresh "
        f"server on core 0 (`DOTNET_gcServer=0`, wrk on core 1), loaded with the same wrk for "
        f"{meta['warmup_s']} s of warm-up, then measured for {meta['duration_s']} s with `perf stat -p` attached "
        "over that wrk run. Per response = divided by the requests wrk sent (`perf/counted.lua`), or for 1 MiB "
        "by the bytes wrk read over the file size. Work items: the sample's `GET /perf/threadpool` "
        "(`ThreadPool.CompletedWorkItemCount`) before and after (n/a where a build lacks it); voluntary "
        "context switches: `/proc/PID/task/*/status`, all threads. Each cell is the median over the rounds "
        "with (min–max).",
        "",
        *table,
        "",
        f"**{line}**",
        "",
        "Kept means: its counts fall (at least one of work items, syscalls and voluntary context switches "
        "by more than 1%, and none rises by more than 1%) and its CPU per response is below A's in more than "
        "half of the rounds. The counts barely depend on how busy the machine is; CPU time does, and the "
        "ABBA rounds make each build meet the same drifts.",
        "",
        "### Rounds",
        "",
        *per_round,
        "",
        "### Exact commands",
        "",
        "```",
        commands,
        f"command: {meta['command']}",
        "```",
        "",
    ]
    with open(f"{base}.md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(table))
    print()
    print(line)


if __name__ == "__main__":
    main()
