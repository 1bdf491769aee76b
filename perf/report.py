#!/usr/bin/env python3
"""Turns perf/run.sh's raw CSV into perf/results/latest.md, latest.svg and the table in perf/README.md.

Standard library only. Every figure is the median over the rounds, with min-max in brackets. Ratios are
paired by round (servers alternate within a round): the median of the per-round ratios, with their min-max.
A scenario in which any server's figures spread by more than NOISY_SPREAD ((max - min) / median) is marked
noisy in the table.
"""
import argparse
import csv
import math
import os
import statistics
from collections import OrderedDict

SERVERS = ["splice", "sockets", "nginx", "go"]
SERVER_LABELS = {
    "splice": "splice (SpliceTransport)",
    "sockets": "sockets (Kestrel)",
    "nginx": "nginx",
    "go": "Go net/http",
}
# Which path each server's file responses take (the "Peers" section of perf/README.md shows how this was
# checked with strace).
SERVER_PATHS = {
    "splice": "headers written, file with sendfile(2)",
    "sockets": "file read into buffers and written (Kestrel's socket transport)",
    "nginx": "`sendfile on; tcp_nopush on;`: headers, then sendfile(2)",
    "go": "http.FileServer: headers and the first 512 bytes written (kept for sniffing), the rest with "
          "sendfile(2) via TCPConn.ReadFrom",
}
NOISY_SPREAD = 0.10
COLORS = {"splice": "#d62728", "sockets": "#1f77b4", "nginx": "#2ca02c", "go": "#9467bd"}
BASELINES = ["sockets", "nginx"]  # ratios are given against these two
CPU_PER_GB_MIN_BYTES = 100 * 1024 * 1024  # CPU s/GB is shown for files this large (100 MiB, 1 GiB)
README_BEGIN = "<!-- latest-results:begin (written by perf/report.py) -->"
README_END = "<!-- latest-results:end -->"


PERF_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(PERF_DIR, "results")


def parse_args():
    """Defaults are run.sh's files, so `python3 perf/report.py` redraws the latest results."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="latest",
                   help="results/NAME.csv, NAME-meta.txt, NAME-commands.txt, NAME-warmup.csv -> NAME.md, NAME.svg")
    p.add_argument("--readme", default=None,
                   help="README.md whose results section to refresh ('' for none; default: perf/README.md "
                        "for the name latest, none otherwise)")
    args = p.parse_args()
    base = os.path.join(RESULTS_DIR, args.name)
    args.csv, args.meta, args.commands = base + ".csv", base + "-meta.txt", base + "-commands.txt"
    args.warmup, args.md, args.svg = base + "-warmup.csv", base + ".md", base + ".svg"
    if args.readme is None:
        args.readme = os.path.join(PERF_DIR, "README.md") if args.name == "latest" else ""
    return args


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def group(rows, kinds, column):
    """{scenario: {server: {round: value}}} for rows of the given kinds, scenarios in first-seen order."""
    out = OrderedDict()
    for row in rows:
        if row["kind"] not in kinds or row.get(column, "") in ("", None):
            continue
        out.setdefault(row["scenario"], {}).setdefault(row["server"], {})[row["round"]] = float(row[column])
    return out


def values(by_round):
    return list(by_round.values()) if by_round else []


def spread(vals):
    """(max - min) / median, or None with fewer than two values."""
    if len(vals) < 2 or statistics.median(vals) == 0:
        return None
    return (max(vals) - min(vals)) / abs(statistics.median(vals))


def noise_cell(by_server):
    """'noisy: nginx 36%, splice 31%' when any server spreads by more than NOISY_SPREAD, else 'ok (≤ n%)'."""
    spreads = {s: spread(values(by_server.get(s))) for s in SERVERS}
    spreads = {s: v for s, v in spreads.items() if v is not None}
    if not spreads:
        return "–"
    noisy = sorted(((v, s) for s, v in spreads.items() if v > NOISY_SPREAD), reverse=True)
    if noisy:
        return "**noisy**: " + ", ".join(f"{s} {v:.0%}" for v, s in noisy)
    return f"ok (≤ {max(spreads.values()):.0%})"


def scenario_info(rows):
    return OrderedDict((r["scenario"], r) for r in rows)


def conns(n):
    return f"{n} conn" if int(n) == 1 else f"{n} conns"


def label(row):
    kind = row["kind"]
    if kind == "file":
        return f"{row['scenario'].split('-')[1]} file, {conns(row['connections'])}"
    if kind == "plaintext":
        pipelined = f", pipelined ×{row['pipeline']}" if int(row["pipeline"]) > 1 else ""
        return f"/plaintext, {conns(row['connections'])}{pipelined}"
    return f"{row['connections']} idle keep-alive conns"


def fmt_number(value):
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(vals):
    if isinstance(vals, dict):
        vals = values(vals)
    if not vals:
        return "–"
    median = statistics.median(vals)
    if min(vals) == max(vals):
        return fmt_number(median)
    return f"{fmt_number(median)} ({fmt_number(min(vals))}–{fmt_number(max(vals))})"


def round_ratios(by_round, base_by_round):
    """One ratio per round in which both have a figure: servers alternate within a round."""
    if not by_round or not base_by_round:
        return []
    return [by_round[r] / base_by_round[r] for r in by_round if r in base_by_round and base_by_round[r] != 0]


def ratio(by_round, base_by_round):
    """Median of the per-round ratios, with their (min–max) when there is more than one round."""
    ratios = round_ratios(by_round, base_by_round)
    if not ratios:
        return "–"
    median = statistics.median(ratios)
    if min(ratios) == max(ratios):
        return f"{median:.2f}×"
    return f"{median:.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def metric_table(data, info, unit_note):
    head = ["scenario"] + [SERVER_LABELS[s] for s in SERVERS] + ["splice ÷ sockets", "splice ÷ nginx",
                                                                 "spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, by_server in data.items():
        cells = [label(info[scenario])] + [cell(by_server.get(s)) for s in SERVERS]
        cells += [ratio(by_server.get("splice"), by_server.get(b)) for b in BASELINES]
        cells.append(noise_cell(by_server))
        lines.append("| " + " | ".join(cells) + " |")
    return [unit_note, ""] + lines + [""]


def ratio_table(data, info):
    head = ["scenario"] + [f"{s} ÷ sockets / ÷ nginx" for s in SERVERS] + ["spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, by_server in data.items():
        cells = [label(info[scenario])]
        for s in SERVERS:
            cells.append(" / ".join(ratio(by_server.get(s), by_server.get(b)) for b in BASELINES))
        cells.append(noise_cell(by_server))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def per_connection(rows, held_col, before_col, scale=1.0):
    """{server: {round: (held - before) * scale / connections held}} for the idle rows."""
    out = {}
    for r in rows:
        if r["kind"] != "idle" or r.get(held_col, "") in ("", None) or r.get(before_col, "") in ("", None):
            continue
        n = float(r["connections_held"] or 0)
        if n > 0:
            out.setdefault(r["server"], {})[r["round"]] = (float(r[held_col]) - float(r[before_col])) * scale / n
    return out


def memory_table(rows):
    """Growth per connection: RSS as read, managed (live objects after a forced full GC) and the rest."""
    rss = per_connection(rows, "rss_held_kib", "rss_before_kib")
    managed = per_connection(rows, "managed_held_bytes", "managed_before_bytes", 1 / 1024)
    rss_gc = per_connection(rows, "rss_held_gc_kib", "rss_before_gc_kib")
    native = {s: {r: rss_gc[s][r] - managed[s][r] for r in managed[s] if r in rss_gc.get(s, {})}
              for s in managed}
    held = group(rows, {"idle"}, "rss_held_kib")
    before = group(rows, {"idle"}, "rss_before_kib")
    count = group(rows, {"idle"}, "connections_held")
    head = ["server", "RSS growth, KiB per conn", "managed, KiB per conn", "native and other, KiB per conn",
            "RSS growth ÷ sockets", "RSS growth ÷ nginx", "RSS before / holding, MiB", "connections held"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario in held:
        for s in SERVERS:
            h, b = held[scenario].get(s, {}), before[scenario].get(s, {})
            lines.append("| " + " | ".join([
                SERVER_LABELS[s], cell(rss.get(s)), cell(managed.get(s)), cell(native.get(s)),
                ratio(rss.get(s), rss.get("sockets")), ratio(rss.get(s), rss.get("nginx")),
                f"{cell([x / 1024 for x in values(b)])} / {cell([x / 1024 for x in values(h)])}",
                cell(count[scenario].get(s))]) + " |")
    spreads = {s: spread(values(v)) for s, v in rss.items()}
    noisy = [f"{s} {v:.0%}" for s, v in spreads.items() if v is not None and v > NOISY_SPREAD]
    if noisy:
        lines += ["", "**Noisy**: the RSS growth per connection spread by more than "
                      f"{NOISY_SPREAD:.0%} ((max − min) ÷ median) for {', '.join(noisy)}."]
    return lines + [""]


def warmup_table(path, meta):
    """Per server: how long its warm-up took and the requests/s of its windows."""
    if not os.path.exists(path):
        return []
    by_server = OrderedDict()
    for r in read_rows(path):
        by_server.setdefault(r["server"], []).append(r)
    if not by_server:
        return []
    window = meta.get("warmup_window_s", "?")
    head = ["server", "warm-up", "windows", "first window, req/s", "last 3 windows, req/s", "last ÷ first",
            "JIT-compiled methods, last 4 windows"]
    lines = [f"Once per server start, windows of {window} s of `warmup.lua` (a fixed mix: 4 KiB and 64 KiB "
             f"files and /plaintext; {meta.get('warmup_cap_s', '?')} s at most) until "
             f"{meta.get('warmup_rule', '')}. The load scenarios start after it.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in SERVERS:
        windows = by_server.get(s)
        if not windows:
            continue
        last = windows[-1]
        rates = [float(w["requests_per_s"]) for w in windows]
        took = f"{last['elapsed_s']} s" + ("" if last["steady"] == "yes" else " (**cap reached, still rising**)")
        lines.append("| " + " | ".join([
            SERVER_LABELS[s], took, str(len(windows)), fmt_number(rates[0]),
            " ".join(fmt_number(v) for v in rates[-3:]), f"{rates[-1] / rates[0]:.2f}×" if rates[0] else "–",
            " ".join(w.get("jit_compiled_methods") or "" for w in windows[-4:]).strip() or "–"]) + " |")
    return lines + [""]


def page_cache_note(rows):
    """A warning when a test file was not wholly in the page cache after some run (fincore, run.sh)."""
    low = OrderedDict()
    for r in rows:
        pct = r.get("file_cached_pct") or ""
        if r["kind"] == "file" and pct != "" and float(pct) < 99:
            name = r["scenario"].split("-")[1]
            low[name] = min(low.get(name, 100.0), float(pct))
    if not low:
        return []
    return ["**Page cache**: after some runs only " + ", ".join(f"{v:.0f}% of the {k} file" for k, v in low.items())
            + " was in the page cache (this VM reclaims file pages it deems cold; run.sh reads each file just "
            "before its scenario): those rows partly measure the disk, for every server.", ""]


def error_notes(rows):
    notes = []
    for r in rows:
        if r["kind"] == "idle":
            continue
        errors = {k: int(r[f"errors_{k}"]) for k in ("connect", "read", "write", "status", "timeout")}
        if any(errors.values()):
            detail = ", ".join(f"{k} {v}" for k, v in errors.items() if v)
            notes.append(f"- round {r['round']}, {r['server']}, {r['scenario']}: {detail}")
    return notes


def write_markdown(path, rows, meta, commands, warmup_path, svg_name):
    info = scenario_info(rows)
    load = {"file", "plaintext"}
    rps = group(rows, load, "requests_per_s")
    mbps = group(rows, {"file"}, "mb_per_s")
    p99 = group(rows, load, "p99_ms")
    cpu = group([r for r in rows if r["kind"] == "file" and int(r["size_bytes"]) >= CPU_PER_GB_MIN_BYTES],
                {"file"}, "cpu_s_per_gb")
    both_cores = group([r for r in rows if r["kind"] == "file" and int(r["size_bytes"]) >= CPU_PER_GB_MIN_BYTES
                        and r.get("both_cores_cpu_s_per_gb")], {"file"}, "both_cores_cpu_s_per_gb")

    only = f", only the scenarios starting with `{meta['only']}`" if meta.get("only") else ""
    took = f", took {int(meta['run_seconds']) / 60:.1f} min" if meta.get("run_seconds") else ""
    out = [
        f"# SpliceTransport performance — {meta['mode']} run{only}",
        "",
        f"- Date: {meta['date']}{took}; commit {meta['commit']}",
        f"- Load average (1, 5, 15 min) at the start: {meta.get('loadavg_start', '?')}, at the end: "
        f"{meta.get('loadavg_end', '?')} (the machine is shared; the run itself keeps about 2 busy); "
        f"machine quiet at the start: {meta.get('quiet_at_start', 'not checked')}",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores; kernel {meta['kernel']}",
        f"- Software: .NET SDK {meta['dotnet']}, {meta['nginx']}, Go {meta['go']}, wrk {meta['wrk']}",
        f"- Every server pinned to core {meta['server_core']}, the load generator to core {meta['client_core']}; "
        f"{meta['rounds']} round(s) of {meta['duration_s']} s per run, servers alternating within each scenario",
        f"- Command: `{meta['command']}`",
        f"- Measured: `src/` as of commit {meta.get('src_commit', '?')}",
        "",
        "Cells are the median over rounds with (min–max). Ratios are taken per round (servers alternate "
        "within a round) and give the median of those with their (min–max); above 1× means more than the "
        "baseline (for requests/s and MB/s better; for latency, CPU and memory worse). **spread** is the "
        f"largest (max − min) ÷ median of a server in that row; above {NOISY_SPREAD:.0%} the row is marked "
        "**noisy**: read its figures as rough.",
        "",
        "Servers: " + "; ".join(f"**{SERVER_LABELS[s]}**: {SERVER_PATHS[s]}" for s in SERVERS) + ".",
        "",
    ]
    warm = warmup_table(warmup_path, meta)
    if warm:
        out += ["## Warm-up to steady state", ""] + warm
    if rps:
        out += ["## Requests per second", ""]
        out += metric_table(rps, info, "wrk `Requests/sec` (completed responses ÷ run time).")
        out += ["### Every server against Kestrel sockets and nginx (requests/s)", ""] + ratio_table(rps, info)
    if mbps:
        out += ["## Transfer, MB/s", ""]
        out += metric_table(mbps, info, "Bytes read by wrk ÷ run time, in 10⁶ bytes/s (partial downloads count).")
        out += page_cache_note(rows)
    if p99:
        out += ["## p99 latency, ms", ""]
        out += metric_table(p99, info, "wrk `--latency` 99th percentile (with pipelining, per batch of requests).")
    if cpu:
        out += ["## Server CPU seconds per GB served", ""]
        out += metric_table(cpu, info, "(utime + stime of the server's processes during the run) ÷ GB read by "
                                       "wrk. Lower is better.")
    if both_cores:
        out += ["## CPU seconds per GB served, both cores (server, client and the kernel's work for both)", ""]
        out += metric_table(both_cores, info, "Busy time of the server's and the client's core ÷ GB read by wrk. "
                                              "Over loopback the kernel charges a connection's TCP work (the receive "
                                              "path, the ACKs a sender handles under its socket lock) to whichever "
                                              "side runs it, so the server's own figure moves with its timing; this "
                                              "one counts all of it. Lower is better.")
    if any(r["kind"] == "idle" for r in rows):
        rounds = len({r["round"] for r in rows if r["kind"] == "idle"})
        out += [f"## Memory holding {meta['idle_connections']} idle keep-alive connections", "",
                f"A **fresh server for every round** (median of {rounds} round(s), with min–max), started for "
                f"this alone and primed with {meta.get('idle_prime_connections', '?')} connections that each make "
                "one request and close (so one-off costs such as JIT are in the baseline); the .NET servers run with "
                f"**`DOTNET_GCgen0size={meta.get('idle_gen0size', '?')}`** (a fixed 1 MiB gen0 budget: the "
                "default follows the L3 size this VM reports and left a varying amount of garbage in RSS). "
                "Each connection makes one request and goes idle; growth = (VmRSS holding them − VmRSS "
                "before) ÷ connections (nginx: master + worker). **managed** = growth of the live managed "
                "heap (`GC.GetTotalMemory` right after a forced, blocking, compacting full GC, from the "
                "sample's `/perf/gc`, mapped only with `--perf-endpoints true`). **native and other** = "
                "growth of VmRSS read right after those forced GCs, minus the managed growth: native "
                "memory, runtime data and GC-heap pages not holding live objects. Lower is better.", ""]
        out += memory_table(rows)
    notes = error_notes(rows)
    out += ["## wrk socket errors", ""] + (notes if notes else ["None."]) + [""]
    if mbps:
        out += ["## Chart", "", f"![requests/s by file size]({os.path.basename(svg_name)})", ""]
    out += [
            "## Exact commands", "", "<details><summary>Servers, and every client command of round 1"
            "</summary>", "", "```"] + commands + ["```", "", "</details>", ""]
    with open(path, "w") as f:
        f.write("\n".join(out))
    return "\n".join(out)


def write_svg(path, rows):
    """Grouped bars of requests/s by file size, one panel per connection level, log scale."""
    files = [r for r in rows if r["kind"] == "file"]
    sizes = list(OrderedDict.fromkeys(r["scenario"].split("-")[1] for r in files))
    conns_by_size = OrderedDict()
    for r in files:
        conns_by_size.setdefault(r["scenario"].split("-")[1], [])
        if int(r["connections"]) not in conns_by_size[r["scenario"].split("-")[1]]:
            conns_by_size[r["scenario"].split("-")[1]].append(int(r["connections"]))
    rps = group(rows, {"file"}, "requests_per_s")
    medians = {k: {s: statistics.median(values(v)) for s, v in by.items()} for k, by in rps.items()}
    all_values = [v for by in medians.values() for v in by.values() if v > 0]
    if not all_values:
        return
    lo = 10 ** math.floor(math.log10(min(all_values)))
    hi = 10 ** math.ceil(math.log10(max(all_values)))

    width, panel_h, top, left, right, bottom = 960, 300, 75, 80, 20, 55
    levels = ["fewer connections", "more connections"]
    height = top + len(levels) * (panel_h + bottom) + 10
    plot_w = width - left - right
    group_w = plot_w / max(len(sizes), 1)
    bar_w = group_w * 0.8 / len(SERVERS)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="16">'
           f'Requests/s by file size (median, log scale; higher is better)</text>']
    for i, s in enumerate(SERVERS):  # legend
        x = left + i * 200
        svg.append(f'<rect x="{x}" y="34" width="12" height="12" fill="{COLORS[s]}"/>')
        svg.append(f'<text x="{x + 16}" y="45">{SERVER_LABELS[s]}</text>')

    def y_of(value, y0):
        frac = (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return y0 + panel_h - frac * panel_h

    for level, level_name in enumerate(levels):
        y0 = top + level * (panel_h + bottom)
        svg.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">{level_name}</text>')
        decade = lo
        while decade <= hi:
            y = y_of(decade, y0)
            svg.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            tick = f"{decade:,.0f}" if decade >= 1 else f"{decade:g}"
            svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
            decade *= 10
        svg.append(f'<line x1="{left}" x2="{left}" y1="{y0}" y2="{y0 + panel_h}" stroke="#333"/>')
        for gi, size in enumerate(sizes):
            counts = conns_by_size[size]
            if level >= len(counts):
                continue
            scenario = f"file-{size}-c{counts[level]}"
            gx = left + gi * group_w + group_w * 0.1
            for si, s in enumerate(SERVERS):
                value = medians.get(scenario, {}).get(s)
                if not value or value <= 0:
                    continue
                y = y_of(value, y0)
                svg.append(f'<rect x="{gx + si * bar_w:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                           f'height="{y0 + panel_h - y:.1f}" fill="{COLORS[s]}">'
                           f'<title>{s} {scenario}: {value:,.1f} req/s</title></rect>')
            svg.append(f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{y0 + panel_h + 16}" '
                       f'text-anchor="middle">{size}, {conns(counts[level])}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def update_readme(path, markdown):
    with open(path) as f:
        text = f.read()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: results markers not found")
    # Headings one level down, links relative to perf/ rather than perf/results/.
    body = "\n".join(("##" + line) if line.startswith("#") else line for line in markdown.splitlines())
    body = body.replace("](latest.svg)", "](results/latest.svg)")
    text = text[:start + len(README_BEGIN)] + "\n\n" + body.strip() + "\n\n" + text[end:]
    with open(path, "w") as f:
        f.write(text)


def main():
    args = parse_args()
    rows = read_rows(args.csv)
    meta = read_meta(args.meta)
    with open(args.commands) as f:
        commands = [line.rstrip("\n") for line in f]
    markdown = write_markdown(args.md, rows, meta, commands, args.warmup, args.svg)
    write_svg(args.svg, rows)
    if args.readme:
        update_readme(args.readme, markdown)


if __name__ == "__main__":
    main()
