#!/usr/bin/env python3
"""Writes perf/results/idle-memory.md: the idle-connection memory of one or more runs of perf/run.sh side by
side (do they agree?), and, from the dotnet-gcdump reports of a run made with --gcdump, which managed types
each idle connection keeps alive on SpliceTransport and on Kestrel's socket transport.

    python3 perf/idle_memory.py idle-a idle-b latest      # results/NAME.csv of each run; gcdumps from the first
                                                          # run that has results/NAME-gcdump/

Standard library only. Per-type figures are (bytes in the held dump - bytes in the before dump) / connections
held, for each round, then the median over rounds.
"""
import argparse
import csv
import os
import re
import statistics
from collections import defaultdict

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(PERF_DIR, "results")
SERVERS = ["splice", "sockets", "nginx", "go"]
DOTNET = ["splice", "sockets"]
LABELS = {"splice": "splice (SpliceTransport)", "sockets": "sockets (Kestrel)", "nginx": "nginx",
          "go": "Go net/http"}
TOP_TYPES = 30
TARGET = 0.6   # growth per idle connection, splice / sockets, wanted by another issue
LINE = re.compile(r"^\s*([\d,]+)\s+([\d,]+)\s+(.+?)\s*$")
BUCKET = re.compile(r"\s*\(Bytes > [\d.]+[KM]?\)")


def read_meta(name):
    meta = {}
    path = os.path.join(RESULTS_DIR, f"{name}-meta.txt")
    if os.path.exists(path):
        for line in open(path):
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def idle_rows(name):
    with open(os.path.join(RESULTS_DIR, f"{name}.csv"), newline="") as f:
        return [r for r in csv.DictReader(f) if r["kind"] == "idle"]


def per_conn(rows):
    """{server: {"rss": [...], "managed": [...], "native": [...]}} in KiB per connection, one value per round."""
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        n = float(r["connections_held"])
        rss = (float(r["rss_held_kib"]) - float(r["rss_before_kib"])) / n
        out[r["server"]]["rss"].append(rss)
        if r.get("managed_held_bytes"):
            managed = (float(r["managed_held_bytes"]) - float(r["managed_before_bytes"])) / 1024 / n
            rss_gc = (float(r["rss_held_gc_kib"]) - float(r["rss_before_gc_kib"])) / n
            out[r["server"]]["managed"].append(managed)
            out[r["server"]]["native"].append(rss_gc - managed)
    return out


def cell(vals):
    if not vals:
        return "–"
    m = statistics.median(vals)
    return f"{m:.2f}" if len(vals) == 1 else f"{m:.2f} ({min(vals):.2f}–{max(vals):.2f})"


def read_gcdump(path):
    """{type: [bytes, count]} from a `dotnet-gcdump report`, size buckets folded into one type."""
    types = defaultdict(lambda: [0, 0])
    total = None
    for line in open(path):
        if "GC Heap bytes" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        m = LINE.match(line)
        if not m or "Type" in line and "Object Bytes" in line:
            continue
        # The report prints each type's object size (an average over a size bucket, rounded) and count.
        name = BUCKET.sub("", m.group(3))
        size, count = int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))
        types[name][0] += size * count
        types[name][1] += count
    return types, total


def type_breakdown(name, rows):
    """{server: (rows of (type, bytes/conn, count/conn), total bytes/conn, rounds)} from NAME-gcdump/."""
    folder = os.path.join(RESULTS_DIR, f"{name}-gcdump")
    held_count = {(r["server"], r["round"]): float(r["connections_held"]) for r in rows}
    out = {}
    for server in DOTNET:
        per_type = defaultdict(lambda: ([], []))
        totals = []
        rounds = sorted({rnd for (s, rnd) in held_count if s == server})
        used = 0
        for rnd in rounds:
            before_path = os.path.join(folder, f"{server}-round{rnd}-before.txt")
            held_path = os.path.join(folder, f"{server}-round{rnd}-held.txt")
            if not (os.path.exists(before_path) and os.path.exists(held_path)):
                continue
            used += 1
            n = held_count[(server, rnd)]
            before, total_before = read_gcdump(before_path)
            held, total_held = read_gcdump(held_path)
            if total_before is not None and total_held is not None:
                totals.append((total_held - total_before) / n)
            for t in set(before) | set(held):
                per_type[t][0].append((held[t][0] - before[t][0]) / n)
                per_type[t][1].append((held[t][1] - before[t][1]) / n)
        if not used:
            continue
        # A type absent from a round's dumps counts as 0 there.
        table = []
        for t, (b, c) in per_type.items():
            b += [0.0] * (used - len(b))
            c += [0.0] * (used - len(c))
            table.append((t, statistics.median(b), statistics.median(c)))
        table.sort(key=lambda x: -x[1])
        out[server] = (table, statistics.median(totals) if totals else None, used)
    return out


def owner(t):
    """Who allocates a type, roughly, from its assembly and name."""
    if re.search(r"SpliceTransport|Transport\.Sockets|System\.Net\.Sockets", t):
        return "transport (SpliceTransport, or Kestrel's socket transport and System.Net.Sockets)"
    if re.search(r"Pipelines", t):
        return "pipes: System.IO.Pipelines (the transport creates two per connection, in both)"
    if re.search(r"Kestrel|AspNetCore", t):
        return "ASP.NET Core and Kestrel's HTTP/1.1 layer (the same code for both)"
    return "runtime types (async boxes, locks, tokens, arrays...) whose owner the type alone does not show"


def short_type(t):
    """Drops the [assembly] suffix into a second column."""
    m = re.match(r"^(.*?)\s+\[([^\]]+)\]$", t)
    return (m.group(1), m.group(2)) if m else (t, "")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", help="result names (results/NAME.csv)")
    p.add_argument("--out", default=os.path.join(RESULTS_DIR, "idle-memory.md"))
    p.add_argument("--types-csv", default=os.path.join(RESULTS_DIR, "idle-memory-types.csv"),
                   help="every type's bytes and objects per connection, for both .NET servers")
    args = p.parse_args()

    runs = [(n, read_meta(n), idle_rows(n)) for n in args.names]
    first_meta = runs[0][1]
    out = ["# Idle keep-alive connections: memory per connection", "",
           f"{first_meta.get('idle_connections', '10000')} connections, each making one `GET /plaintext` and then "
           "held idle, against a **fresh server per round** (primed with "
           f"{first_meta.get('idle_prime_connections', '?')} connections that each make one request and close), "
           "the .NET servers with "
           f"`DOTNET_GCgen0size={first_meta.get('idle_gen0size', '?')}`; `perf/run.sh --only idle` "
           "(see perf/README.md). KiB per connection, median over rounds (min–max).", "",
           "- **RSS**: (VmRSS holding − VmRSS before) ÷ connections.",
           "- **managed**: growth of `GC.GetTotalMemory` right after a forced, blocking, compacting full GC "
           "(the sample's `/perf/gc`, mapped only with `--perf-endpoints true`).",
           "- **native and other**: growth of VmRSS read right after those forced GCs, minus the managed growth.",
           ""]

    out += ["## Runs side by side", "",
            "| run | commit (src/ as of) | rounds | server | RSS | managed | native and other | RSS ÷ sockets |",
            "|---|---|---|---|---|---|---|---|"]
    medians = defaultdict(dict)
    for name, meta, rows in runs:
        data = per_conn(rows)
        rounds = len({r["round"] for r in rows})
        for s in SERVERS:
            if s not in data:
                continue
            rss = data[s]["rss"]
            medians[s][name] = statistics.median(rss)
            ratio = [a / b for a, b in zip(rss, data["sockets"]["rss"])] if "sockets" in data else []
            ratio_cell = "–" if not ratio else (
                f"{statistics.median(ratio):.2f}×" if len(ratio) == 1 else
                f"{statistics.median(ratio):.2f}× ({min(ratio):.2f}–{max(ratio):.2f})")
            out.append(f"| {name} ({meta.get('date', '?')}) | {meta.get('commit', '?')} ({meta.get('src_commit', '?')}) "
                       f"| {rounds} | {LABELS[s]} | {cell(rss)} | {cell(data[s]['managed'])} | "
                       f"{cell(data[s]['native'])} | {ratio_cell} |")
    out.append("")
    if len(runs) > 1:
        out += ["Largest difference between the runs' medians (RSS, KiB per connection): " + "; ".join(
            f"{LABELS[s]} {max(v.values()) - min(v.values()):.2f}" for s, v in medians.items() if len(v) > 1) + ".", ""]

    for name, meta, rows in runs:
        breakdown = type_breakdown(name, rows)
        if not breakdown:
            continue
        with open(args.types_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run", "server", "type", "assembly", "bytes_per_connection", "objects_per_connection"])
            for s in DOTNET:
                for t, b, c in breakdown.get(s, ([], None, 0))[0]:
                    if abs(b) >= 0.5 or abs(c) >= 0.005:
                        w.writerow([name, s, *short_type(t), f"{b:.1f}", f"{c:.3f}"])
        out += [f"## Managed types kept alive per idle connection (run {name}, dotnet-gcdump)", "",
                "`dotnet-gcdump collect` before the connections were opened and while they were held, in each "
                "round; per type: (bytes in the held dump − bytes in the before dump) ÷ connections, median over "
                f"rounds, bytes being the report's (rounded) object size × count. The top {TOP_TYPES} types by bytes; "
                "1.00 objects per connection means one object per connection. gcdump's total is its own GC heap "
                "total; the types add up to a little less, since the report rounds object sizes. Every type is in "
                f"`{os.path.basename(args.types_csv)}`.", ""]
        data = per_conn(rows)
        for s in DOTNET:
            if s not in breakdown:
                continue
            table, total, used = breakdown[s]
            shown = table[:TOP_TYPES]
            rest = sum(b for _, b, _ in table[TOP_TYPES:])
            out += [f"### {LABELS[s]}", "",
                    f"gcdump total: {total:.0f} bytes per connection ({used} round(s)); /perf/gc managed growth: "
                    f"{statistics.median(data[s]['managed']) * 1024:.0f} bytes per connection.", "",
                    "| type | assembly | bytes per conn | objects per conn |", "|---|---|---|---|"]
            for t, b, c in shown:
                typ, asm = short_type(t)
                out.append(f"| `{typ}` | {asm} | {b:,.0f} | {c:.2f} |")
            out += [f"| all other types | | {rest:,.0f} | |", ""]
            groups = defaultdict(float)
            for t, b, _ in table:
                groups[owner(t)] += b
            out += ["| by owner (all types) | bytes per conn |", "|---|---|"]
            out += [f"| {g} | {b:,.0f} |" for g, b in sorted(groups.items(), key=lambda x: -x[1])] + [""]
        if len(breakdown) == 2:
            sp, so = breakdown["splice"][1], breakdown["sockets"][1]
            own = {srv: sum(b for t, b, _ in breakdown[srv][0] if owner(t).startswith(("transport", "pipes")))
                   for srv in DOTNET}
            rss_sp = statistics.median(data["splice"]["rss"]) * 1024
            rss_so = statistics.median(data["sockets"]["rss"]) * 1024
            if sp and so:
                out += ["### What this means for the target", "",
                        f"Managed bytes per idle connection: splice {sp:,.0f}, sockets {so:,.0f} (splice ÷ sockets "
                        f"{sp / so:.2f}×); RSS growth splice {rss_sp:,.0f}, sockets {rss_so:,.0f} bytes "
                        f"({rss_sp / rss_so:.2f}×). Types named after the transport, plus the two pipes it creates, account "
                        f"for {own['splice']:,.0f} bytes on splice and {own['sockets']:,.0f} on sockets; ASP.NET "
                        "Core's and Kestrel's HTTP/1.1 objects, the same on both, for most of the rest. Even with "
                        "none of those transport-owned managed bytes, splice would grow by about "
                        f"{(rss_sp - own['splice']) / rss_so:.2f}× sockets, so a target of ≤ {TARGET}× sockets "
                        "per idle connection cannot be met inside the transport's own objects: it needs less "
                        "per-connection state above it (Kestrel's Http1Connection, request and response headers, "
                        "HttpContext and their async state machines exist for every accepted connection, idle or "
                        "not) or less native memory per connection.", ""]
        break   # one breakdown is enough: the first run that has dumps
    with open(args.out, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
