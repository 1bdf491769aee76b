#!/usr/bin/env python3
"""perf/report.py [--name NAME]: results/NAME.md and NAME.svg from perf/run.sh's NAME.csv, NAME-meta.txt,
NAME-commands.txt and NAME-warmup.csv (NAME: latest by default).

Cells are the median over the rounds with (min–max); ratios are paired by round (servers alternate within a
round). A scenario in which a server's figures spread by more than NOISY_SPREAD ((max − min) ÷ median) is noisy.
"""
import argparse
import math
import os
import statistics
import sys

sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import (LABELS, RESULTS, SERVERS, cell, fmt, idle_growth, quotient, ratio, read_lines,  # noqa: E402
                    read_meta, read_rows, table)

# Which path each server's file responses take (perf/README.md's "Peers" says how this was checked with strace).
SERVER_PATHS = {"splice": "headers written, file with sendfile(2)",
                "sockets": "file read into buffers and written (Kestrel's socket transport)",
                "nginx": "`sendfile on; tcp_nopush on;`: headers, then sendfile(2)",
                "go": "http.FileServer: headers and the first 512 bytes written (kept for sniffing), the rest with "
                      "sendfile(2) via TCPConn.ReadFrom"}
NOISY_SPREAD = 0.10
COLORS = {"splice": "#d62728", "sockets": "#1f77b4", "nginx": "#2ca02c", "go": "#9467bd"}
BASELINES = ["sockets", "nginx"]  # ratios are given against these two
CPU_PER_GB_MIN_BYTES = 100 * 1024 * 1024  # CPU s/GB is shown for files this large (100 MiB, 1 GiB)
ERRORS = ("connect", "read", "write", "status", "timeout")   # wrk's socket errors, errors_* in the CSV


def group(rows, kinds, column):
    """{scenario: {server: {round: value}}} for rows of the given kinds, scenarios in first-seen order."""
    out = {}
    for r in rows:
        if r["kind"] in kinds and r.get(column):
            out.setdefault(r["scenario"], {}).setdefault(r["server"], {})[r["round"]] = float(r[column])
    return out


def spreads(by_server):
    """{server: (max − min) ÷ median} of the servers with two values or more and a median other than 0."""
    out = {}
    for s, by_round in by_server.items():
        vals = list(by_round.values())
        if len(vals) > 1 and statistics.median(vals):
            out[s] = (max(vals) - min(vals)) / abs(statistics.median(vals))
    return out


def noise_cell(by_server):
    """'**noisy**: nginx 36%, splice 31%' when a server spreads by more than NOISY_SPREAD, else 'ok (≤ n%)'."""
    found = spreads(by_server)
    noisy = sorted(((v, s) for s, v in found.items() if v > NOISY_SPREAD), reverse=True)
    if noisy:
        return "**noisy**: " + ", ".join(f"{s} {v:.0%}" for v, s in noisy)
    return f"ok (≤ {max(found.values()):.0%})" if found else "–"


def conns(n):
    return f"{n} conn" if int(n) == 1 else f"{n} conns"


def label(row):
    if row["kind"] == "file":
        return f"{row['scenario'].split('-')[1]} file, {conns(row['connections'])}"
    if row["kind"] == "plaintext":
        pipelined = f", pipelined ×{row['pipeline']}" if int(row["pipeline"]) > 1 else ""
        return f"/plaintext, {conns(row['connections'])}{pipelined}"
    return f"{row['connections']} idle keep-alive conns"


def scenario_table(data, info, head, cells):
    """A row per scenario: its label, cells(by_server), and the spread."""
    return table(["scenario"] + head + ["spread"],
                 [[label(info[sc])] + cells(by) + [noise_cell(by)] for sc, by in data.items()]) + [""]


def metric_section(title, data, info, note):
    """Each server's figures, then splice against the baselines; nothing without data."""
    if not data:
        return []
    head = [LABELS[s] for s in SERVERS] + [f"splice ÷ {b}" for b in BASELINES]
    return [f"## {title}", "", note, ""] + scenario_table(data, info, head, lambda by: [
        cell(by.get(s)) for s in SERVERS] + [ratio(by.get("splice"), by.get(b)) for b in BASELINES])


def memory_table(rows):
    """Growth per connection: RSS as read, managed (live objects after a forced full GC) and the rest."""
    growth = idle_growth(rows)
    rss = growth["rss"]
    before, held, count = (group(rows, {"idle"}, c) for c in ("rss_before_kib", "rss_held_kib", "connections_held"))
    lines = table(["server", "RSS growth, KiB per conn", "managed, KiB per conn", "native and other, KiB per conn",
                   "RSS growth ÷ sockets", "RSS growth ÷ nginx", "RSS before / holding, MiB", "connections held"],
                  [[LABELS[s], *(cell(growth[k].get(s)) for k in growth),
                    *(ratio(rss.get(s), rss.get(b)) for b in BASELINES),
                    " / ".join(cell([x / 1024 for x in by[sc].get(s, {}).values()]) for by in (before, held)),
                    cell(count[sc].get(s))] for sc in held for s in SERVERS])
    if noisy := [f"{s} {v:.0%}" for s, v in spreads(rss).items() if v > NOISY_SPREAD]:
        lines += ["", f"**Noisy**: the RSS growth per connection spread by more than {NOISY_SPREAD:.0%} ((max − min) "
                      f"÷ median) for {', '.join(noisy)}."]
    return lines + [""]


def warmup_section(path, meta):
    """Per server: how long its warm-up took and the requests/s of its windows."""
    if not (warm := read_rows(path, optional=True)):
        return []
    body = []
    for s in [s for s in SERVERS if any(w["server"] == s for w in warm)]:
        windows = [w for w in warm if w["server"] == s]
        rates, last = [float(w["requests_per_s"]) for w in windows], windows[-1]
        took = f"{last['elapsed_s']} s" + ("" if last["steady"] == "yes" else " (**cap reached, still rising**)")
        body.append([LABELS[s], took, str(len(windows)), fmt(rates[0]), " ".join(fmt(v) for v in rates[-3:]),
                     quotient(rates[-1], rates[0]),
                     " ".join(w.get("jit_compiled_methods") or "" for w in windows[-4:]).strip() or "–"])
    return ["## Warm-up to steady state", "",
            f"Once per server start, windows of {meta.get('warmup_window_s', '?')} s of `warmup.lua` (a fixed mix: "
            f"4 KiB and 64 KiB files and /plaintext; {meta.get('warmup_cap_s', '?')} s at most) until "
            f"{meta.get('warmup_rule', '')}. The load scenarios start after it.", ""] + table(
        ["server", "warm-up", "windows", "first window, req/s", "last 3 windows, req/s", "last ÷ first",
         "JIT-compiled methods, last 4 windows"], body) + [""]


def page_cache_note(rows):
    """A warning when a test file was not wholly in the page cache after some run (fincore, run.sh)."""
    low = {}
    for r in rows:
        if r["kind"] == "file" and r.get("file_cached_pct") and float(r["file_cached_pct"]) < 99:
            name = r["scenario"].split("-")[1]
            low[name] = min(low.get(name, 100.0), float(r["file_cached_pct"]))
    return ["**Page cache**: after some runs only " + ", ".join(f"{v:.0f}% of the {k} file" for k, v in low.items())
            + " was in the page cache (this VM reclaims file pages it deems cold; run.sh reads each file just before "
            "its scenario): those rows partly measure the disk, for every server.", ""] if low else []


def error_notes(rows):
    notes = []
    for r in [r for r in rows if r["kind"] != "idle"]:
        if errors := [f"{k} {n}" for k in ERRORS if (n := int(r[f"errors_{k}"]))]:
            notes.append(f"- round {r['round']}, {r['server']}, {r['scenario']}: {', '.join(errors)}")
    return notes or ["None."]


def markdown(rows, base):
    """NAME.md from NAME.csv's rows and the other raw files (base: results/NAME)."""
    meta, info, load = read_meta(base + "-meta.txt"), {r["scenario"]: r for r in rows}, {"file", "plaintext"}
    big = [r for r in rows if r["kind"] == "file" and int(r["size_bytes"]) >= CPU_PER_GB_MIN_BYTES]
    rps, mbps = group(rows, load, "requests_per_s"), group(rows, {"file"}, "mb_per_s")
    only = f", only the scenarios starting with `{meta['only']}`" if meta.get("only") else ""
    took = f", took {int(meta['run_seconds']) / 60:.1f} min" if meta.get("run_seconds") else ""
    out = [f"# SpliceTransport performance — {meta['mode']} run{only}", "",
           f"- Date: {meta['date']}{took}; commit {meta['commit']}",
           f"- Load average (1, 5, 15 min) at the start: {meta.get('loadavg_start', '?')}, at the end: "
           f"{meta.get('loadavg_end', '?')} (the machine is shared; the run itself keeps about 2 busy); machine quiet "
           f"at the start: {meta.get('quiet_at_start', 'not checked')}",
           f"- Machine: {meta['cpu']}, {meta['cores']} cores; kernel {meta['kernel']}",
           f"- Software: .NET SDK {meta['dotnet']}, {meta['nginx']}, Go {meta['go']}, wrk {meta['wrk']}",
           f"- Every server pinned to core {meta['server_core']}, the load generator to core {meta['client_core']}; "
           f"{meta['rounds']} round(s) of {meta['duration_s']} s per run, servers alternating within each scenario",
           f"- Command: `{meta['command']}`", f"- Measured: `src/` as of commit {meta.get('src_commit', '?')}", "",
           "Cells are the median over rounds with (min–max). Ratios are taken per round (servers alternate within a "
           "round) and give the median of those with their (min–max); above 1× means more than the baseline (for "
           "requests/s and MB/s better; for latency, CPU and memory worse). **spread** is the largest (max − min) ÷ "
           f"median of a server in that row; above {NOISY_SPREAD:.0%} the row is marked **noisy**: read its figures "
           "as rough.", "",
           "Servers: " + "; ".join(f"**{LABELS[s]}**: {SERVER_PATHS[s]}" for s in SERVERS) + ".", ""]
    out += warmup_section(base + "-warmup.csv", meta)
    out += metric_section("Requests per second", rps, info, "wrk `Requests/sec` (completed responses ÷ run time).")
    if rps:
        out += ["### Every server against Kestrel sockets and nginx (requests/s)", ""] + scenario_table(
            rps, info, [f"{s} ÷ sockets / ÷ nginx" for s in SERVERS],
            lambda by: [" / ".join(ratio(by.get(s), by.get(b)) for b in BASELINES) for s in SERVERS])
    out += metric_section("Transfer, MB/s", mbps, info,
                          "Bytes read by wrk ÷ run time, in 10⁶ bytes/s (partial downloads count).")
    out += page_cache_note(rows) if mbps else []
    out += metric_section("p99 latency, ms", group(rows, load, "p99_ms"), info,
                          "wrk `--latency` 99th percentile (with pipelining, per batch of requests).")
    out += metric_section("Server CPU seconds per GB served", group(big, {"file"}, "cpu_s_per_gb"), info,
                          "(utime + stime of the server's processes during the run) ÷ GB read by wrk. Lower is better.")
    out += metric_section(
        "CPU seconds per GB served, both cores (server, client and the kernel's work for both)",
        group(big, {"file"}, "both_cores_cpu_s_per_gb"), info,
        "Busy time of the server's and the client's core ÷ GB read by wrk. Over loopback the kernel charges a "
        "connection's TCP work (the receive path, the ACKs a sender handles under its socket lock) to whichever side "
        "runs it, so the server's own figure moves with its timing; this one counts all of it. Lower is better.")
    if rounds := len({r["round"] for r in rows if r["kind"] == "idle"}):
        out += [f"## Memory holding {meta['idle_connections']} idle keep-alive connections", "",
                f"A **fresh server for every round** (median of {rounds} round(s), with min–max), started for this "
                f"alone and primed with {meta.get('idle_prime_connections', '?')} connections that each make one "
                "request and close (so one-off costs such as JIT are in the baseline); the .NET servers run with "
                f"**`DOTNET_GCgen0size={meta.get('idle_gen0size', '?')}`** (a fixed 1 MiB gen0 budget: the default "
                "follows the L3 size this VM reports and left a varying amount of garbage in RSS). Each connection "
                "makes one request and goes idle; growth = (VmRSS holding them − VmRSS before) ÷ connections (nginx: "
                "master + worker). **managed** = growth of the live managed heap (`GC.GetTotalMemory` right after a "
                "forced, blocking, compacting full GC, from the sample's `/perf/gc`, mapped only with "
                "`--perf-endpoints true`). **native and other** = growth of VmRSS read right after those forced GCs, "
                "minus the managed growth: native memory, runtime data and GC-heap pages not holding live objects. "
                "Lower is better.", ""] + memory_table(rows)
    out += ["## wrk socket errors", ""] + error_notes(rows) + [""]
    out += ["## Chart", "", f"![requests/s by file size]({os.path.basename(base)}.svg)", ""] if mbps else []
    out += ["## Exact commands", "", "<details><summary>Servers, and every client command of round 1</summary>", "",
            "```", *read_lines(base + "-commands.txt"), "```", "", "</details>", ""]
    return "\n".join(out)


def svg(rows):
    """Grouped bars of requests/s by file size, one panel per connection level, log scale; None without files."""
    sizes = {}   # {size: its connection counts, in first-seen order}
    for r in rows:
        if r["kind"] == "file":
            counts = sizes.setdefault(r["scenario"].split("-")[1], [])
            if int(r["connections"]) not in counts:
                counts.append(int(r["connections"]))
    medians = {sc: {s: statistics.median(v.values()) for s, v in by.items()}
               for sc, by in group(rows, {"file"}, "requests_per_s").items()}
    if not (found := [v for by in medians.values() for v in by.values() if v > 0]):
        return None
    lo, hi = 10 ** math.floor(math.log10(min(found))), 10 ** math.ceil(math.log10(max(found)))
    width, panel_h, top, left, right, bottom = 960, 300, 75, 80, 20, 55
    levels = ["fewer connections", "more connections"]
    height = top + len(levels) * (panel_h + bottom) + 10
    group_w = (width - left - right) / max(len(sizes), 1)
    bar_w = group_w * 0.8 / len(SERVERS)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="16">'
           'Requests/s by file size (median, log scale; higher is better)</text>']
    for i, s in enumerate(SERVERS):  # legend
        out += [f'<rect x="{left + i * 200}" y="34" width="12" height="12" fill="{COLORS[s]}"/>',
                f'<text x="{left + i * 200 + 16}" y="45">{LABELS[s]}</text>']

    def y_of(value, y0):
        return y0 + panel_h - (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * panel_h

    for level, level_name in enumerate(levels):
        y0, decade = top + level * (panel_h + bottom), lo
        out.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">{level_name}</text>')
        while decade <= hi:
            y, tick = y_of(decade, y0), f"{decade:,.0f}" if decade >= 1 else f"{decade:g}"
            out += [f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>',
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>']
            decade *= 10
        out.append(f'<line x1="{left}" x2="{left}" y1="{y0}" y2="{y0 + panel_h}" stroke="#333"/>')
        for gi, (size, counts) in enumerate(sizes.items()):
            if level >= len(counts):
                continue
            scenario, gx = f"file-{size}-c{counts[level]}", left + gi * group_w + group_w * 0.1
            for si, s in enumerate(SERVERS):
                if (value := medians.get(scenario, {}).get(s)) and value > 0:
                    y = y_of(value, y0)
                    out.append(f'<rect x="{gx + si * bar_w:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                               f'height="{y0 + panel_h - y:.1f}" fill="{COLORS[s]}">'
                               f'<title>{s} {scenario}: {value:,.1f} req/s</title></rect>')
            out.append(f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{y0 + panel_h + 16}" '
                       f'text-anchor="middle">{size}, {conns(counts[level])}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="latest")
    base = os.path.join(RESULTS, p.parse_args().name)
    rows = read_rows(base + ".csv")
    page = markdown(rows, base)
    with open(base + ".md", "w") as f:
        f.write(page)
    if chart := svg(rows):
        with open(base + ".svg", "w") as f:
            f.write(chart)


if __name__ == "__main__":
    main()
