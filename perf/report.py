#!/usr/bin/env python3
"""perf/report.py [--name NAME]: results/NAME.md from perf/run.sh's NAME.csv, NAME-meta.txt, NAME-commands.txt and
NAME-warmup.csv (NAME: latest by default)."""
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
sys.dont_write_bytecode = True   # no perf/__pycache__ left behind in the tree
from tables import (RESULTS, cell, fmt, name_arg, num, quotient, read_lines, read_meta, read_rows, table,  # noqa: E402
                    two)

SERVERS = ["splice", "sockets", "nginx", "go"]
LABELS = {"splice": "splice (SpliceTransport)", "sockets": "sockets (Kestrel)", "nginx": "nginx", "go": "Go net/http"}
BASELINES = ["sockets", "nginx"]  # ratios are given against these two
NOISY_SPREAD = 0.10
CPU_PER_GB_MIN_BYTES = 100 * 1024 * 1024  # CPU s/GB is shown for files this large (100 MiB, 1 GiB)
ERRORS = ("connect", "read", "write", "status", "timeout")   # wrk's socket errors, errors_* in the CSV
# An idle row's growth per connection held, (holding − before) ÷ connections in KiB, of RSS as read, of managed
# bytes (/perf/gc's live bytes after a forced full GC) and of VmRSS right after those GCs: key, columns, scale
GROWTH = [("rss", "rss_{}_kib", 1.0), ("managed", "managed_{}_bytes", 1 / 1024), ("gc", "rss_{}_gc_kib", 1.0)]


def group(rows, kinds, column):
    """{scenario: {server: {round: value}}} of the rows of the given kinds, scenarios in first-seen order."""
    out = {}
    for r in rows:
        if r["kind"] in kinds and (v := num(r.get(column))) is not None:
            out.setdefault(r["scenario"], {}).setdefault(r["server"], {})[r["round"]] = v
    return out


def ratio(by_round, base):
    """Median of the per-round ratios (the servers alternate within a round) with their (min–max)."""
    return cell([v / base[r] for r, v in (by_round or {}).items() if base and base.get(r)], two, "×")


def spreads(by_server):
    """{server: (max − min) ÷ median} of the servers with two values or more and a median other than 0."""
    return {s: (max(v) - min(v)) / abs(statistics.median(v))
            for s, v in ((s, list(b.values())) for s, b in by_server.items()) if len(v) > 1 and statistics.median(v)}


def section(title, data, labels, note, head=None, cells=None):
    """A row per scenario: its label, each server's figures and splice against the baselines (or head and
    cells(by_server)), and the spread ('**noisy**: nginx 36%, splice 31%' above NOISY_SPREAD); nothing without data."""
    def spread(by_server):
        found = spreads(by_server)
        if noisy := sorted(((v, s) for s, v in found.items() if v > NOISY_SPREAD), reverse=True):
            return "**noisy**: " + ", ".join(f"{s} {v:.0%}" for v, s in noisy)
        return f"ok (≤ {max(found.values()):.0%})" if found else "–"
    if not data:
        return []
    head = head or [LABELS[s] for s in SERVERS] + [f"splice ÷ {b}" for b in BASELINES]
    cells = cells or (lambda by: [cell(by.get(s)) for s in SERVERS] + [
        ratio(by.get("splice"), by.get(b)) for b in BASELINES])
    return [title, "", *([note, ""] if note else [])] + table(["scenario"] + head + ["spread"], [
        [labels[sc]] + cells(by) + [spread(by)] for sc, by in data.items()]) + [""]


if __name__ == "__main__":
    base = os.path.join(RESULTS, name_arg("latest"))
    rows = read_rows(base + ".csv")
    m = defaultdict(lambda: "?", {"quiet_at_start": "not checked", "warmup_rule": ""} | read_meta(base + "-meta.txt"))
    load, labels = {"file", "plaintext"}, {  # each file and /plaintext scenario's label
        r["scenario"]: ("/plaintext" if r["kind"] == "plaintext" else r["scenario"].split("-")[1] + " file")
        + f", {r['connections']} conn" + ("" if int(r["connections"]) == 1 else "s")
        + (f", pipelined ×{r['pipeline']}" if r["kind"] == "plaintext" and int(r["pipeline"]) > 1 else "")
        for r in rows if r["kind"] != "idle"}
    big = [r for r in rows if r["kind"] == "file" and int(r["size_bytes"]) >= CPU_PER_GB_MIN_BYTES]
    rps, mbps = group(rows, load, "requests_per_s"), group(rows, {"file"}, "mb_per_s")
    out = [f"# SpliceTransport performance — {m['mode']} run"
           + (f", only the scenarios starting with `{m['only']}`" if m.get("only") else ""), "",
           f"- Date: {m['date']}" + (f", took {int(m['run_seconds']) / 60:.1f} min" if m.get("run_seconds") else "")
           + f"; commit {m['commit']}",
           f"- Load average (1, 5, 15 min) at the start: {m['loadavg_start']}, at the end: {m['loadavg_end']} (the "
           f"machine is shared; the run itself keeps about 2 busy); machine quiet at the start: {m['quiet_at_start']}",
           f"- Machine: {m['cpu']}, {m['cores']} cores; kernel {m['kernel']}",
           f"- Software: .NET SDK {m['dotnet']}, {m['nginx']}, Go {m['go']}, wrk {m['wrk']}",
           f"- Every server pinned to core {m['server_core']}, the load generator to core {m['client_core']}; "
           f"{m['rounds']} round(s) of {m['duration_s']} s per run, servers alternating within each scenario",
           f"- Command: `{m['command']}`", f"- Measured: `src/` as of commit {m['src_commit']}", "",
           "The servers, the method and how to read a cell (median over rounds with (min–max), ratios paired by round, "
           f"**noisy** when a server's spread tops {NOISY_SPREAD:.0%}): `perf/README.md`, \"run.sh\".", ""]
    warm, body = read_rows(base + "-warmup.csv", optional=True), []
    for s in SERVERS:   # the warm-up: how long it took and the requests/s of its windows
        if windows := [w for w in warm if w["server"] == s]:
            rates, last = [float(w["requests_per_s"]) for w in windows], windows[-1]
            body.append([LABELS[s], f"{last['elapsed_s']} s" + (
                "" if last["steady"] == "yes" else " (**cap reached, still rising**)"), str(len(windows)),
                fmt(rates[0]), " ".join(fmt(v) for v in rates[-3:]), quotient(rates[-1], rates[0]),
                " ".join(w.get("jit_compiled_methods") or "" for w in windows[-4:]).strip() or "–"])
    out += ["## Warm-up to steady state", "", f"Once per server start, windows of {m['warmup_window_s']} s of "
            f"`warmup.lua` (a fixed mix: 4 KiB and 64 KiB files and /plaintext; {m['warmup_cap_s']} s at most) until "
            f"{m['warmup_rule']}. The load scenarios start after it.", ""] + table(
        ["server", "warm-up", "windows", "first window, req/s", "last 3 windows, req/s", "last ÷ first",
         "JIT-compiled methods, last 4 windows"], body) + [""] if warm else []
    out += section("## Requests per second", rps, labels, "wrk `Requests/sec` (completed responses ÷ run time).")
    out += section("### Every server against Kestrel sockets and nginx (requests/s)", rps, labels, None,
                   [f"{s} ÷ sockets / ÷ nginx" for s in SERVERS],
                   lambda by: [" / ".join(ratio(by.get(s), by.get(b)) for b in BASELINES) for s in SERVERS])
    out += section("## Transfer, MB/s", mbps, labels,
                   "Bytes read by wrk ÷ run time, in 10⁶ bytes/s (partial downloads count).")
    cached = [(r["scenario"].split("-")[1], pct) for r in rows   # files not wholly in the page cache (fincore, run.sh)
              if r["kind"] == "file" and (pct := num(r.get("file_cached_pct"))) is not None and pct < 99]
    low = {name: min(pct for n, pct in cached if n == name) for name, _ in cached}
    out += ["**Page cache**: after some runs only " + ", ".join(f"{v:.0f}% of the {k} file" for k, v in low.items())
            + " was in the page cache (this VM reclaims file pages it deems cold; run.sh reads each file just before "
            "its scenario): those rows partly measure the disk, for every server.", ""] if low and mbps else []
    out += section("## p99 latency, ms", group(rows, load, "p99_ms"), labels,
                   "wrk `--latency` 99th percentile (with pipelining, per batch of requests).")
    out += section("## Server CPU seconds per GB served", group(big, {"file"}, "cpu_s_per_gb"), labels,
                   "(utime + stime of the server's processes during the run) ÷ GB read by wrk. Lower is better.")
    out += section(
        "## CPU seconds per GB served, both cores (server, client and the kernel's work for both)",
        group(big, {"file"}, "both_cores_cpu_s_per_gb"), labels,
        "Busy time of the server's and the client's core ÷ GB read by wrk. Over loopback the kernel charges a "
        "connection's TCP work (the receive path, the ACKs a sender handles under its socket lock) to whichever side "
        "runs it, so the server's own figure moves with its timing; this one counts all of it. Lower is better.")
    if rounds := len({r["round"] for r in rows if r["kind"] == "idle"}):
        for r in [r for r in rows if r["kind"] == "idle"]:
            n = num(r.get("connections_held"))
            for key, column, scale in GROWTH:
                held, before = num(r.get(column.format("held"))), num(r.get(column.format("before")))
                r[key] = None if held is None or before is None or not n or n < 0 else (held - before) * scale / n
            r["native"] = None if r["managed"] is None or r["gc"] is None else r["gc"] - r["managed"]   # and other
        rss, managed, native, before, held, count = (group(rows, {"idle"}, c) for c in (
            "rss", "managed", "native", "rss_before_kib", "rss_held_kib", "connections_held"))
        out += [f"## Memory holding {m['idle_connections']} idle keep-alive connections", "",
                f"A **fresh server for every round** ({rounds} round(s)), primed with {m['idle_prime_connections']} "
                f"short connections; .NET with `DOTNET_GCgen0size={m['idle_gen0size']}`. Growth = (VmRSS holding − "
                "VmRSS before) ÷ connections; **managed** = growth of the live heap after a forced full GC "
                "(`/perf/gc`); **native and other** = growth of VmRSS after those GCs − managed. Lower is better; the "
                "method: `perf/README.md`.", ""] + table(
            ["server", "RSS growth, KiB per conn", "managed, KiB per conn", "native and other, KiB per conn",
             "RSS growth ÷ sockets", "RSS growth ÷ nginx", "RSS before / holding, MiB", "connections held"],
            [[LABELS[s], *(cell(g.get(sc, {}).get(s)) for g in (rss, managed, native)),
              *(ratio(rss.get(sc, {}).get(s), rss.get(sc, {}).get(b)) for b in BASELINES),
              " / ".join(cell([x / 1024 for x in by[sc].get(s, {}).values()]) for by in (before, held)),
              cell(count[sc].get(s))] for sc in held for s in SERVERS])
        noisy = [f"{s} {v:.0%}" for by in rss.values() for s, v in spreads(by).items() if v > NOISY_SPREAD]
        out += ["", f"**Noisy**: the RSS growth per connection spread by more than {NOISY_SPREAD:.0%} ((max − min) ÷ "
                    f"median) for {', '.join(noisy)}.", ""] if noisy else [""]
    errors = [f"- round {r['round']}, {r['server']}, {r['scenario']}: {', '.join(found)}" for r in rows
              if r["kind"] != "idle" and (found := [f"{k} {n}" for k in ERRORS if (n := int(r[f"errors_{k}"]))])]
    out += ["## wrk socket errors", "", *(errors or ["None."]), "", "## Exact commands", "",
            "<details><summary>Servers, and every client command of round 1</summary>", "", "```",
            *read_lines(base + "-commands.txt"), "```", "", "</details>", ""]
    Path(base + ".md").write_text("\n".join(out))
