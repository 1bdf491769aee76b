#!/usr/bin/env python3
"""perf/idle_memory.py NAME... [--out MD] [--types-csv CSV]: results/idle-memory.md, the idle-connection memory
of perf/run.sh's runs results/NAME.csv side by side and, from the first run with dotnet-gcdump reports
(results/NAME-gcdump/, run.sh --gcdump), the managed types each idle connection keeps alive on the two .NET
servers: per type, (bytes in the held dump − bytes in the before dump) ÷ connections held, median over rounds."""
import argparse
import csv
import os
import re
import statistics
import sys
from collections import defaultdict

sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import (LABELS, RESULTS, SERVERS, cell, idle_growth, ratio, read_lines, read_meta,  # noqa: E402
                    read_rows, table, two)

DOTNET = ["splice", "sockets"]
TOP_TYPES = 30
TARGET = 0.6   # growth per idle connection, splice / sockets, wanted by another issue
LINE = re.compile(r"^\s*([\d,]+)\s+([\d,]+)\s+(.+?)\s*$")
BUCKET = re.compile(r"\s*\(Bytes > [\d.]+[KM]?\)")
# Who allocates a type, roughly, from its assembly and name: the first pattern that matches.
OWNERS = [(r"SpliceTransport|Transport\.Sockets|System\.Net\.Sockets",
           "transport (SpliceTransport, or Kestrel's socket transport and System.Net.Sockets)"),
          (r"Pipelines", "pipes: System.IO.Pipelines (the transport creates two per connection, in both)"),
          (r"Kestrel|AspNetCore", "ASP.NET Core and Kestrel's HTTP/1.1 layer (the same code for both)"),
          (r"", "runtime types (async boxes, locks, tokens, arrays...) whose owner the type alone does not show")]


def owner(t):
    return next(name for pattern, name in OWNERS if re.search(pattern, t))


def short_type(t):
    """Type and assembly, from "Type [assembly]"."""
    m = re.match(r"^(.*?)\s+\[([^\]]+)\]$", t)
    return (m.group(1), m.group(2)) if m else (t, "")


def read_gcdump(path):
    """{type: [bytes, count]} and the GC heap total of a `dotnet-gcdump report`, size buckets folded into one
    type (the report prints each type's object size, an average over a size bucket, rounded, and its count)."""
    types, total = defaultdict(lambda: [0, 0]), None
    for line in read_lines(path):
        if "GC Heap bytes" in line:
            total = int(line.split()[0].replace(",", ""))
        elif (m := LINE.match(line)) and not ("Type" in line and "Object Bytes" in line):
            size, count = (int(m[i].replace(",", "")) for i in (1, 2))
            entry = types[BUCKET.sub("", m[3])]
            entry[0], entry[1] = entry[0] + size * count, entry[1] + count
    return types, total


def type_breakdown(name, rows):
    """{server: ([(type, bytes/conn, count/conn)], total bytes/conn, rounds)} from results/NAME-gcdump/."""
    held_count = {(r["server"], r["round"]): float(r["connections_held"]) for r in rows}
    out = {}
    for server in DOTNET:
        per_type, totals, used = defaultdict(lambda: ([], [])), [], 0
        for rnd in sorted({rnd for (s, rnd) in held_count if s == server}):
            paths = [os.path.join(RESULTS, f"{name}-gcdump", f"{server}-round{rnd}-{when}.txt")
                     for when in ("before", "held")]
            if not all(os.path.exists(p) for p in paths):
                continue
            used, n = used + 1, held_count[(server, rnd)]
            (before, total_before), (held, total_held) = map(read_gcdump, paths)
            if total_before is not None and total_held is not None:
                totals.append((total_held - total_before) / n)
            for t in set(before) | set(held):
                per_type[t][0].append((held[t][0] - before[t][0]) / n)
                per_type[t][1].append((held[t][1] - before[t][1]) / n)
        if used:   # a type absent from a round's dumps counts as 0 there
            types = [(t, statistics.median(b + [0.0] * (used - len(b))), statistics.median(c + [0.0] * (used - len(c))))
                     for t, (b, c) in per_type.items()]
            out[server] = (sorted(types, key=lambda x: -x[1]), statistics.median(totals) if totals else None, used)
    return out


def types_section(name, breakdown, growth, types_csv):
    """The gcdump tables of one run; writes every type to types_csv."""
    head = ["run", "server", "type", "assembly", "bytes_per_connection", "objects_per_connection"]
    with open(types_csv, "w", newline="") as f:
        csv.writer(f).writerows([head] + [[name, s, *short_type(t), f"{b:.1f}", f"{c:.3f}"] for s in breakdown
                                          for t, b, c in breakdown[s][0] if abs(b) >= 0.5 or abs(c) >= 0.005])
    out = [f"## Managed types kept alive per idle connection (run {name}, dotnet-gcdump)", "",
           "`dotnet-gcdump collect` before the connections were opened and while they were held, in each round; per "
           "type: (bytes in the held dump − bytes in the before dump) ÷ connections, median over rounds, bytes being "
           f"the report's (rounded) object size × count. The top {TOP_TYPES} types by bytes; 1.00 objects per "
           "connection means one object per connection. gcdump's total is its own GC heap total; the types add up to "
           f"a little less, since the report rounds object sizes. Every type is in `{os.path.basename(types_csv)}`.",
           ""]
    for s, (types, total, used) in breakdown.items():
        groups = defaultdict(float)
        for t, b, _ in types:
            groups[owner(t)] += b
        out += [f"### {LABELS[s]}", "",
                f"gcdump total: {total:.0f} bytes per connection ({used} round(s)); /perf/gc managed growth: "
                f"{statistics.median(growth['managed'][s].values()) * 1024:.0f} bytes per connection.", ""]
        out += table(["type", "assembly", "bytes per conn", "objects per conn"],
                     [[f"`{short_type(t)[0]}`", short_type(t)[1], f"{b:,.0f}", f"{c:.2f}"]
                      for t, b, c in types[:TOP_TYPES]]
                     + [["all other types", None, f"{sum(b for _, b, _ in types[TOP_TYPES:]):,.0f}", None]]) + [""]
        out += table(["by owner (all types)", "bytes per conn"],
                     [[g, f"{b:,.0f}"] for g, b in sorted(groups.items(), key=lambda x: -x[1])]) + [""]
    if len(breakdown) == 2 and breakdown["splice"][1] and breakdown["sockets"][1]:
        sp, so = breakdown["splice"][1], breakdown["sockets"][1]
        own = {s: sum(b for t, b, _ in breakdown[s][0] if owner(t).startswith(("transport", "pipes"))) for s in DOTNET}
        rss_sp, rss_so = (statistics.median(growth["rss"][s].values()) * 1024 for s in DOTNET)
        out += ["### What this means for the target", "",
                f"Managed bytes per idle connection: splice {sp:,.0f}, sockets {so:,.0f} (splice ÷ sockets "
                f"{sp / so:.2f}×); RSS growth splice {rss_sp:,.0f}, sockets {rss_so:,.0f} bytes "
                f"({rss_sp / rss_so:.2f}×). Types named after the transport, plus the two pipes it creates, account "
                f"for {own['splice']:,.0f} bytes on splice and {own['sockets']:,.0f} on sockets; ASP.NET Core's and "
                "Kestrel's HTTP/1.1 objects, the same on both, for most of the rest. Even with none of those "
                "transport-owned managed bytes, splice would grow by about "
                f"{(rss_sp - own['splice']) / rss_so:.2f}× sockets, so a target of ≤ {TARGET}× sockets per idle "
                "connection cannot be met inside the transport's own objects: it needs less per-connection state "
                "above it (Kestrel's Http1Connection, request and response headers, HttpContext and their async "
                "state machines exist for every accepted connection, idle or not) or less native memory per "
                "connection.", ""]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="+", help="result names (results/NAME.csv)")
    p.add_argument("--out", default=os.path.join(RESULTS, "idle-memory.md"))
    p.add_argument("--types-csv", default=os.path.join(RESULTS, "idle-memory-types.csv"),
                   help="every type's bytes and objects per connection, for both .NET servers")
    args = p.parse_args()
    runs = [(n, read_meta(os.path.join(RESULTS, f"{n}-meta.txt"), optional=True),
             [r for r in read_rows(os.path.join(RESULTS, f"{n}.csv")) if r["kind"] == "idle"]) for n in args.names]
    first = runs[0][1]
    out = ["# Idle keep-alive connections: memory per connection", "",
           f"{first.get('idle_connections', '10000')} connections, each making one `GET /plaintext` and then held "
           "idle, against a **fresh server per round** (primed with "
           f"{first.get('idle_prime_connections', '?')} connections that each make one request and close), the .NET "
           f"servers with `DOTNET_GCgen0size={first.get('idle_gen0size', '?')}`; `perf/run.sh --only idle` (see "
           "perf/README.md). KiB per connection, median over rounds (min–max).", "",
           "- **RSS**: (VmRSS holding − VmRSS before) ÷ connections.",
           "- **managed**: growth of `GC.GetTotalMemory` right after a forced, blocking, compacting full GC "
           "(the sample's `/perf/gc`, mapped only with `--perf-endpoints true`).",
           "- **native and other**: growth of VmRSS read right after those forced GCs, minus the managed growth.",
           "", "## Runs side by side", ""]
    medians, side_by_side = defaultdict(dict), []
    for name, meta, rows in runs:
        growth, rounds = idle_growth(rows), len({r["round"] for r in rows})
        for s in [s for s in SERVERS if s in growth["rss"]]:
            medians[s][name] = statistics.median(growth["rss"][s].values())
            side_by_side.append([f"{name} ({meta.get('date', '?')})",
                                 f"{meta.get('commit', '?')} ({meta.get('src_commit', '?')})", str(rounds), LABELS[s]]
                                + [cell(growth[k].get(s), two, always=True) for k in ("rss", "managed", "native")]
                                + [ratio(growth["rss"][s], growth["rss"].get("sockets"), always=True)])
    out += table(["run", "commit (src/ as of)", "rounds", "server", "RSS", "managed", "native and other",
                  "RSS ÷ sockets"], side_by_side) + [""]
    if len(runs) > 1:
        out += ["Largest difference between the runs' medians (RSS, KiB per connection): " + "; ".join(
            f"{LABELS[s]} {max(v.values()) - min(v.values()):.2f}" for s, v in medians.items() if len(v) > 1) + ".", ""]
    for name, meta, rows in runs:   # one breakdown is enough: the first run that has dumps
        if breakdown := type_breakdown(name, rows):
            out += types_section(name, breakdown, idle_growth(rows), args.types_csv)
            break
    with open(args.out, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
