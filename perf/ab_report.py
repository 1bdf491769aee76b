#!/usr/bin/env python3
"""perf/ab_report.py --name NAME: results/ab-NAME.md from perf/ab.sh's ab-NAME.csv, -rounds.csv, -meta.txt and
-commands.txt; prints its table and verdict. Per response: see tables.responses. B is kept when its counts (work
items, syscalls, voluntary context switches, and allocated bytes where both builds report them) fall — one by more
than COUNT_TOLERANCE, none rising by more — and its CPU per response is below A's in more than half of the rounds."""
import os
import statistics
import sys

sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import RESULTS, cell, num, per_response, quotient, read_lines, read_meta, read_rows, table  # noqa: E402

COUNT_TOLERANCE = 0.01   # a count whose median moves by less than 1% has not changed
# key, CSV column (per response, × scale), row label
FIGURES = [("cpu_us", "task_clock_ms", 1000, "CPU µs / response (task-clock, all threads)"),
           ("pool", "pool_work_items", 1, "thread-pool work items / response"),
           ("syscalls", "syscalls", 1,
            "system calls / response (raw_syscalls:sys_enter, all threads, spinning included)"),
           ("voluntary", "voluntary_context_switches", 1, "voluntary context switches / response"),
           ("allocated", "allocated_bytes", 1, "managed bytes allocated / response (GC.GetTotalAllocatedBytes)")]
COUNTS = [("pool", "work items"), ("syscalls", "syscalls"), ("voluntary", "voluntary context switches"),
          ("allocated", "allocated bytes")]


def figures(row):
    secs = num(row["duration_us"]) / 1e6
    return {key: per_response(row, column, scale) for key, column, scale, _ in FIGURES} | {
        "rps": num(row["requests"]) / secs if secs else None}


def median_of(by_round, key):
    vals = [f[key] for f in by_round.values() if f[key] is not None]
    return statistics.median(vals) if vals else None


def verdict(a, b, rounds):
    """The verdict line, and in how many of the paired rounds B's CPU per response was below A's."""
    moved = {"fall": [], "rise": [], "unchanged (±1%)": [], "n/a": []}
    for key, label in COUNTS:
        ma, mb = median_of(a, key), median_of(b, key)
        if key == "allocated" and ma is None and mb is None:
            continue   # runs from before the sample reported allocations: the verdict they had
        if not ma or mb is None:
            moved["n/a"].append(label)
        else:
            change = "fall" if mb / ma < 1 - COUNT_TOLERANCE else "rise" if mb / ma > 1 + COUNT_TOLERANCE else \
                "unchanged (±1%)"
            moved[change].append(f"{label} {quotient(mb, ma, 3)}")
    paired = [r for r in rounds if r in a and r in b and a[r]["cpu_us"] is not None and b[r]["cpu_us"] is not None]
    lower = sum(1 for r in paired if b[r]["cpu_us"] < a[r]["cpu_us"])
    reasons = ["a count rose"] if moved["rise"] else ["no count fell"] if not moved["fall"] else []
    if 2 * lower <= len(paired):
        reasons.append("CPU per response not lower in most rounds")
    head = "DO NOT KEEP B (" + "; ".join(reasons) + ")" if reasons else "KEEP B"
    counts = "; ".join(f"{k}: " + ", ".join(v) for k, v in moved.items() if v)
    cpu = quotient(median_of(b, "cpu_us"), median_of(a, "cpu_us"), 3, "n/a")
    return (f"verdict: {head} — counts {counts}; B's CPU per response below A's in {lower} of {len(paired)} rounds "
            f"(medians {cpu})"), lower, len(paired)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "--name":
        sys.exit("usage: python3 perf/ab_report.py --name NAME")
    base = os.path.join(RESULTS, f"ab-{sys.argv[2]}")
    meta, round_rows = read_meta(f"{base}-meta.txt"), read_rows(f"{base}-rounds.csv")
    build_of, data = {meta["server_A"]: "A", meta["server_B"]: "B"}, {"A": {}, "B": {}}
    for row in read_rows(f"{base}.csv"):
        data[build_of[row["server"]]][int(row["pass"].removeprefix("round"))] = figures(row)
    a, b = data["A"], data["B"]
    info = {(int(r["round"]), r["build"]): r for r in round_rows}
    rounds = sorted({rnd for rnd, _ in info})
    order = {rnd: " ".join(r["build"] for r in round_rows if int(r["round"]) == rnd) for rnd in rounds}
    line, lower, paired = verdict(a, b, rounds)
    if smoke := meta.get("smoke") == "1":
        line += " [smoke run: checks the script; its figures and verdict mean nothing]"
    # Allocated bytes only where a build measured them (perf/ab.sh runs before the sample reported them had none).
    labels = [(key, label) for key, _, _, label in FIGURES
              if key != "allocated" or median_of(a, key) is not None or median_of(b, key) is not None]
    labels += [("rps", "requests/s")]
    figure_table = table(
        [None] + [f"{x}: {meta[f'short_{x}']} ({meta[f'transport_{x}']})" for x in "AB"] + ["B ÷ A (medians)"],
        [[label, cell([f[key] for f in a.values()], empty="n/a"), cell([f[key] for f in b.values()], empty="n/a"),
          quotient(median_of(b, key), median_of(a, key), 3, "n/a")] for key, label in labels]
        + [["rounds in which B's CPU / response was below A's", None, None, f"{lower} of {paired}"]])

    def round_row(r):
        ca, cb = a.get(r, {}).get("cpu_us"), b.get(r, {}).get("cpu_us")
        if not ca or cb is None:
            return [str(r), order[r], "–", "–", "–", None, None, None]
        ia, ib = info[(r, "A")], info[(r, "B")]
        return [str(r), order[r], f"{ca:.1f}", f"{cb:.1f}", quotient(cb, ca, 3),
                f"{ia['loadavg_1min']}, {ib['loadavg_1min']}", ia["warmup_requests_per_s"], ib["warmup_requests_per_s"]]

    path = "/plaintext" if meta["file"] == "plaintext" else f"/{meta['file']}.bin"
    counted_allocations = ", allocated bytes" if any(key == "allocated" for key, _ in labels) else ""
    lines = [f"# A/B: {meta['short_A']} against {meta['short_B']}, `{meta['scenario']}` (perf/ab.sh)", ""]
    lines += ["**Smoke run** (`--smoke`): 1 round pair, 2 s of warm-up, 2 s measured. It checks the script; the "
              "figures and the verdict mean nothing.", ""] if smoke else []
    lines += [
        f"Run {meta['date']} on {meta['cpu']} ({meta['cores']} cores), {meta['kernel']}, .NET SDK {meta['dotnet']}, "
        f"wrk {meta['wrk']}, {meta['perf']}; hardware counters: {meta['hardware_counters']}. Load average at start "
        f"{meta['loadavg_start']}, at end {meta['loadavg_end']} (quiet at start: {meta['quiet_at_start']}); "
        f"{meta['run_seconds']} s in all. Script at {meta['script_commit']}.", ""]
    lines += table(["build", "ref", "commit", "last commit that changed `src/`", "transport"], [
        [x, f"`{meta[f'ref_{x}']}`", meta[f"sha_{x}"], meta[f"src_commit_{x}"], meta[f"transport_{x}"]] for x in "AB"])
    lines += [
        "", f"Scenario `{meta['scenario']}`: `wrk -t1 -c{meta['connections']}` on {meta['scheme']}://127.0.0.1:"
        f"{meta.get('port', '?')}{path}. {meta['rounds']} round pair(s) in ABBA order (A B, B A, A B, …); in every "
        f"round each build is a fresh server on core 0 (`DOTNET_gcServer=0`, wrk on core 1), loaded with the same wrk "
        f"for {meta['warmup_s']} s of warm-up, then measured for {meta['duration_s']} s with `perf stat -p` attached "
        "over that wrk run. Per response = divided by the requests wrk sent (`perf/counted.lua`), or for 1 MiB by the "
        "bytes wrk read over the file size. Work items: the sample's `GET /perf/threadpool` "
        "(`ThreadPool.CompletedWorkItemCount`) before and after (n/a where a build lacks it); voluntary context "
        "switches: `/proc/PID/task/*/status`, all threads. Each cell is the median over the rounds with (min–max).",
        "", *figure_table, "", f"**{line}**", "",
        f"Kept means: its counts fall (at least one of work items, syscalls{counted_allocations} and voluntary "
        "context switches by more than 1%, and none rises by more than 1%) and its CPU per response is below A's in "
        "more than half of the rounds. The counts barely depend on how busy the machine is; CPU time does, and the "
        "ABBA rounds make each build meet the same drifts.", "", "### Rounds", ""]
    lines += table(["round", "order", "A CPU µs / response", "B CPU µs / response", "B ÷ A",
                    "load average (1 min) at A's, B's start", "A warm-up req/s", "B warm-up req/s"],
                   [round_row(r) for r in rounds])
    lines += ["", "### Exact commands", "", "```", *read_lines(f"{base}-commands.txt"), f"command: {meta['command']}",
              "```", ""]
    with open(f"{base}.md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(figure_table) + "\n\n" + line)


if __name__ == "__main__":
    main()
