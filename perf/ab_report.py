"""perf/ab_report.py --name NAME: results/ab-NAME.md from perf/ab.sh's ab-NAME.csv, -rounds.csv, -meta.txt and
-commands.txt; prints its table and verdict (its rule: "Kept means" on the page; per response: tables.responses)."""
import os
import statistics
import sys
from pathlib import Path
sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import (RESULTS, cell, name_arg, num, per_response, quotient, read_lines, read_meta, read_rows,  # noqa: E402
                    table)

COUNT_TOLERANCE = 0.01   # a count whose median moves by less than 1% has not changed
CPU = "task_clock_ms"   # per response in µs
FIGURES = {CPU: "CPU µs / response (task-clock, all threads)", "pool_work_items": "thread-pool work items / response",
           "syscalls": "system calls / response (raw_syscalls:sys_enter, all threads, spinning included)",
           "voluntary_context_switches": "voluntary context switches / response",
           "allocated_bytes": "managed bytes allocated / response (GC.GetTotalAllocatedBytes)", "rps": "requests/s"}
COUNTS = {"pool_work_items": "work items", "syscalls": "syscalls",   # what the verdict weighs, by its names there
          "voluntary_context_switches": "voluntary context switches", "allocated_bytes": "allocated bytes"}


def figures(row):
    secs = num(row["duration_us"]) / 1e6
    return {c: per_response(row, c, 1000 if c == CPU else 1) for c in FIGURES if c != "rps"} | {
        "rps": num(row["requests"]) / secs if secs else None}


def median_of(by_round, key):
    vals = [f[key] for f in by_round.values() if f[key] is not None]
    return statistics.median(vals) if vals else None


def verdict(a, b, rounds, shown):
    """The verdict line, and in how many of the paired rounds B's CPU per response was below A's."""
    moved = {"fall": [], "rise": [], "unchanged (±1%)": [], "n/a": []}
    for key in [c for c in shown if c in COUNTS]:
        ma, mb = median_of(a, key), median_of(b, key)
        change = ("n/a" if not ma or mb is None else "fall" if mb / ma < 1 - COUNT_TOLERANCE
                  else "rise" if mb / ma > 1 + COUNT_TOLERANCE else "unchanged (±1%)")
        moved[change].append(COUNTS[key] + ("" if change == "n/a" else f" {quotient(mb, ma, 3)}"))
    paired = [r for r in rounds if r in a and r in b and a[r][CPU] is not None and b[r][CPU] is not None]
    lower = sum(1 for r in paired if b[r][CPU] < a[r][CPU])
    reasons = ["a count rose"] if moved["rise"] else ["no count fell"] if not moved["fall"] else []
    reasons += ["CPU per response not lower in most rounds"] if 2 * lower <= len(paired) else []
    head = "DO NOT KEEP B (" + "; ".join(reasons) + ")" if reasons else "KEEP B"
    return (f"verdict: {head} — counts " + "; ".join(f"{k}: " + ", ".join(v) for k, v in moved.items() if v)
            + f"; B's CPU per response below A's in {lower} of {len(paired)} rounds (medians "
            f"{quotient(median_of(b, CPU), median_of(a, CPU), 3, 'n/a')})"), f"{lower} of {len(paired)}"


if __name__ == "__main__":
    base = os.path.join(RESULTS, f"ab-{name_arg()}")
    m, round_rows, rows = read_meta(f"{base}-meta.txt"), read_rows(f"{base}-rounds.csv"), read_rows(f"{base}.csv")
    a, b = ({int(r["pass"].removeprefix("round")): figures(r) for r in rows if r["server"] == m[f"server_{x}"]}
            for x in "AB")
    info = {(int(r["round"]), r["build"]): r for r in round_rows}
    rounds = sorted({rnd for rnd, _ in info})
    # Allocated bytes only where a build measured them (perf/ab.sh runs before the sample reported them had none).
    shown = [c for c in FIGURES if c != "allocated_bytes" or any(median_of(x, c) is not None for x in (a, b))]
    line, lower = verdict(a, b, rounds, shown)
    if smoke := m.get("smoke") == "1":
        line += " [smoke run: checks the script; its figures and verdict mean nothing]"
    head = [None, *(f"{x}: {m[f'short_{x}']} ({m[f'transport_{x}']})" for x in "AB"), "B ÷ A (medians)"]
    figure_table = table(head, [[FIGURES[c], *(cell([f[c] for f in x.values()], empty="n/a") for x in (a, b)),
                                 quotient(median_of(b, c), median_of(a, c), 3, "n/a")] for c in shown]
                         + [["rounds in which B's CPU / response was below A's", None, None, lower]])
    round_table = []
    for r in rounds:
        ca, cb, ia, ib = a.get(r, {}).get(CPU), b.get(r, {}).get(CPU), info.get((r, "A")), info.get((r, "B"))
        round_table.append([str(r), " ".join(x["build"] for x in round_rows if int(x["round"]) == r)] + (
            ["–", "–", "–", None, None, None] if not ca or cb is None else
            [f"{ca:.1f}", f"{cb:.1f}", quotient(cb, ca, 3), f"{ia['loadavg_1min']}, {ib['loadavg_1min']}",
             ia["warmup_requests_per_s"], ib["warmup_requests_per_s"]]))
    builds = table(["build", "ref", "commit", "last commit that changed `src/`", "transport"], [
        [x, f"`{m[f'ref_{x}']}`", m[f"sha_{x}"], m[f"src_commit_{x}"], m[f"transport_{x}"]] for x in "AB"])
    path = "plaintext" if m["file"] == "plaintext" else m["file"] + ".bin"
    lines = [f"# A/B: {m['short_A']} against {m['short_B']}, `{m['scenario']}` (perf/ab.sh)", "", *([
        "**Smoke run** (`--smoke`): 1 round pair, 2 s of warm-up, 2 s measured. It checks the script; the figures and "
        "the verdict mean nothing.", ""] if smoke else []),
        f"Run {m['date']} on {m['cpu']} ({m['cores']} cores), {m['kernel']}, .NET SDK {m['dotnet']}, wrk {m['wrk']}, "
        f"{m['perf']}; hardware counters: {m['hardware_counters']}. Load average at start {m['loadavg_start']}, at end "
        f"{m['loadavg_end']} (quiet at start: {m['quiet_at_start']}); {m['run_seconds']} s in all. Script at "
        f"{m['script_commit']}.", "", *builds, "",
        f"Scenario `{m['scenario']}`: `wrk -t1 -c{m['connections']}` on {m['scheme']}://127.0.0.1:{m.get('port', '?')}/"
        f"{path}; {m['rounds']} round pair(s) in ABBA order, each build a fresh server per round, warmed for "
        f"{m['warmup_s']} s, measured for {m['duration_s']} s with `perf stat -p` attached. Per response and the "
        "method: `perf/README.md`, \"ab.sh\". Each cell: the median over the rounds (min–max).", "", *figure_table,
        "", f"**{line}**", "", "Kept means: its counts fall (one of work items, syscalls"
        f"{', allocated bytes' if 'allocated_bytes' in shown else ''} and voluntary context switches by more than 1%, "
        "none rising by more than 1%) and its CPU per response is below A's in more than half of the rounds.", "",
        "### Rounds", "", *table(["round", "order", "A CPU µs / response", "B CPU µs / response", "B ÷ A",
                                  "load average (1 min) at A's, B's start", "A warm-up req/s", "B warm-up req/s"],
                                 round_table),
        "", "### Exact commands", "", "```", *read_lines(f"{base}-commands.txt"), f"command: {m['command']}", "```", ""]
    Path(f"{base}.md").write_text("\n".join(lines))
    print("\n".join(figure_table) + "\n\n" + line)
