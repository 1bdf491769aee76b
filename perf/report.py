#!/usr/bin/env python3
"""Turns perf/run.sh's raw CSV into perf/results/latest.md, latest.svg and the table in perf/README.md.

Standard library only. Every figure is the median over the rounds, with min-max in brackets;
ratios are ratios of medians, taken within the same run (the machine is noisy: only those matter).
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
    p.add_argument("--csv", default=os.path.join(RESULTS_DIR, "latest.csv"))
    p.add_argument("--meta", default=os.path.join(RESULTS_DIR, "latest-meta.txt"),
                   help="key=value lines written by run.sh")
    p.add_argument("--commands", default=os.path.join(RESULTS_DIR, "latest-commands.txt"),
                   help="the exact commands run.sh ran")
    p.add_argument("--md", default=os.path.join(RESULTS_DIR, "latest.md"))
    p.add_argument("--svg", default=os.path.join(RESULTS_DIR, "latest.svg"))
    p.add_argument("--readme", default=os.path.join(PERF_DIR, "README.md"),
                   help="README.md whose results section to refresh ('' for none)")
    return p.parse_args()


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
    """{scenario: {server: [values]}} for rows of the given kinds, scenarios in first-seen order."""
    out = OrderedDict()
    for row in rows:
        if row["kind"] not in kinds or row[column] == "":
            continue
        out.setdefault(row["scenario"], {}).setdefault(row["server"], []).append(float(row[column]))
    return out


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


def cell(values):
    if not values:
        return "–"
    median = statistics.median(values)
    if min(values) == max(values):
        return fmt_number(median)
    return f"{fmt_number(median)} ({fmt_number(min(values))}–{fmt_number(max(values))})"


def ratio(values, base):
    if not values or not base or statistics.median(base) == 0:
        return "–"
    return f"{statistics.median(values) / statistics.median(base):.2f}×"


def metric_table(data, info, unit_note):
    head = ["scenario"] + [SERVER_LABELS[s] for s in SERVERS] + ["splice ÷ sockets", "splice ÷ nginx"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, by_server in data.items():
        cells = [label(info[scenario])] + [cell(by_server.get(s, [])) for s in SERVERS]
        cells += [ratio(by_server.get("splice"), by_server.get(b)) for b in BASELINES]
        lines.append("| " + " | ".join(cells) + " |")
    return [unit_note, ""] + lines + [""]


def ratio_table(data, info):
    head = ["scenario"] + [f"{s} ÷ sockets / ÷ nginx" for s in SERVERS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, by_server in data.items():
        cells = [label(info[scenario])]
        for s in SERVERS:
            cells.append(" / ".join(ratio(by_server.get(s), by_server.get(b)) for b in BASELINES))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def memory_table(rows):
    held = group(rows, {"idle"}, "rss_held_kib")
    before = group(rows, {"idle"}, "rss_before_kib")
    count = group(rows, {"idle"}, "connections_held")
    head = ["server", "RSS holding them, MiB", "RSS just before, MiB", "growth, KiB per connection",
            "÷ sockets", "÷ nginx", "connections held"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario in held:
        for s in SERVERS:
            h = held[scenario].get(s, [])
            b = before[scenario].get(s, [])
            n = count[scenario].get(s, [])
            per_conn = [(x - y) / c for x, y, c in zip(h, b, n) if c > 0]
            lines.append("| " + " | ".join([
                SERVER_LABELS[s], cell([x / 1024 for x in h]), cell([x / 1024 for x in b]), cell(per_conn),
                ratio(h, held[scenario].get("sockets")), ratio(h, held[scenario].get("nginx")),
                cell(n)]) + " |")
    return lines + [""]


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


def write_markdown(path, rows, meta, commands):
    info = scenario_info(rows)
    load = {"file", "plaintext"}
    rps = group(rows, load, "requests_per_s")
    mbps = group(rows, {"file"}, "mb_per_s")
    p99 = group(rows, load, "p99_ms")
    cpu = group([r for r in rows if r["kind"] == "file" and int(r["size_bytes"]) >= CPU_PER_GB_MIN_BYTES],
                {"file"}, "cpu_s_per_gb")

    out = [
        f"# SpliceTransport performance — {meta['mode']} run",
        "",
        f"- Date: {meta['date']}, commit {meta['commit']}",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores; kernel {meta['kernel']}",
        f"- Software: .NET SDK {meta['dotnet']}, {meta['nginx']}, Go {meta['go']}, wrk {meta['wrk']}",
        f"- Every server pinned to core {meta['server_core']}, the load generator to core {meta['client_core']}; "
        f"{meta['rounds']} round(s) of {meta['duration_s']} s per run, servers alternating within each scenario",
        f"- Command: `{meta['command']}`",
        "",
        "Cells are the median over rounds with (min–max). Ratios are ratios of medians; above 1× means "
        "more than the baseline (for requests/s and MB/s better; for latency, CPU and memory worse).",
        "",
        "## Requests per second",
        "",
    ]
    out += metric_table(rps, info, "wrk `Requests/sec` (completed responses ÷ run time).")
    out += ["### Every server against Kestrel sockets and nginx (requests/s)", ""] + ratio_table(rps, info)
    out += ["## Transfer, MB/s", ""]
    out += metric_table(mbps, info, "Bytes read by wrk ÷ run time, in 10⁶ bytes/s (partial downloads count).")
    out += ["## p99 latency, ms", ""]
    out += metric_table(p99, info, "wrk `--latency` 99th percentile (with pipelining, per batch of requests).")
    out += ["## Server CPU seconds per GB served", ""]
    out += metric_table(cpu, info, "(utime + stime of the server's processes during the run) ÷ GB read by wrk. "
                                   "Lower is better.")
    out += [f"## Memory holding {meta['idle_connections']} idle keep-alive connections", "",
            "VmRSS of the server (nginx: master + worker) after each connection has made one request and "
            "gone idle. Lower is better.", ""]
    out += memory_table(rows)
    notes = error_notes(rows)
    out += ["## wrk socket errors", ""] + (notes if notes else ["None."]) + [""]
    out += ["## Chart", "", "![requests/s by file size](latest.svg)", "",
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
    medians = {k: {s: statistics.median(v) for s, v in by.items()} for k, by in rps.items()}
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
    markdown = write_markdown(args.md, rows, meta, commands)
    write_svg(args.svg, rows)
    if args.readme:
        update_readme(args.readme, markdown)


if __name__ == "__main__":
    main()
