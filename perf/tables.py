"""What perf/'s report scripts share: the raw files, "median (min–max)" cells, ratios, markdown tables, the division
per response and the growth per idle connection. Standard library only."""
import csv
import os
import statistics

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SERVERS = ["splice", "sockets", "nginx", "go"]
LABELS = {"splice": "splice (SpliceTransport)", "sockets": "sockets (Kestrel)", "nginx": "nginx", "go": "Go net/http"}
FILE_BYTES = {"4KiB": 4096, "64KiB": 65536, "1MiB": 1048576, "32MiB": 33554432}
two = "{:.2f}".format


def read_lines(path, optional=False):
    """A file's lines without their ends; [] for a missing optional one."""
    if optional and not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n") for line in f]


def read_meta(path, optional=False):
    """The key=value lines of a NAME-meta.txt; {} for a missing optional one."""
    return dict(line.partition("=")[::2] for line in read_lines(path, optional))


def read_rows(path, optional=False):
    """The rows of a CSV file as dicts (no field spans lines); [] for a missing optional one."""
    return list(csv.DictReader(read_lines(path, optional)))


def num(value):
    """A CSV field as a float; None when it is empty or missing."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt(value, digits=2):
    """1,234 / 12.3 / 1.23 (digits below 10); – for None."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.{digits}f}"


def cell(vals, form=fmt, unit="", empty="–", always=False):
    """The median of a list (or of a {round: value} dict's values; None values left out) with (min–max) after it,
    left out for one value and, unless always, for equal ones."""
    vals = [v for v in ((vals.values() if isinstance(vals, dict) else vals) or []) if v is not None]
    if not vals:
        return empty
    text = form(statistics.median(vals)) + unit
    if len(vals) == 1 or not always and min(vals) == max(vals):
        return text
    return f"{text} ({form(min(vals))}–{form(max(vals))})"


def ratio(by_round, base, always=False):
    """Median of the per-round ratios (the servers alternate within a round) with their (min–max)."""
    return cell([v / base[r] for r, v in (by_round or {}).items() if base and base.get(r)], two, "×", always=always)


def quotient(a, b, digits=2, empty="–"):
    """a ÷ b as "1.23×"."""
    return f"{a / b:.{digits}f}×" if a is not None and b else empty


def row(cells):
    """A markdown table row; a None cell is left blank, one space wide."""
    return "|" + "|".join(" " if c is None else f" {c} " for c in cells) + "|"


def table(head, rows):
    return [row(head), "|" + "---|" * len(head)] + [row(r) for r in rows]


def responses(row):
    """Responses of one pass: the requests wrk sent (counted.lua; the server handled the last one on each
    connection although wrk stopped before counting its response), or for files of 1 MiB and more the bytes wrk
    read over the file's size (downloads still running when wrk stops cost CPU and syscalls too; headers are
    < 0.03% of the bytes)."""
    size = FILE_BYTES.get(row.get("file") or row["scenario"].split("-")[0])
    if size and size >= FILE_BYTES["1MiB"] and num(row.get("bytes")):
        return num(row["bytes"]) / size
    return num(row.get("sent")) or num(row["requests"])


def per_response(row, column, scale=1):
    """row[column] × scale ÷ responses(row); None when either is missing."""
    value, n = num(row.get(column)), responses(row)
    return value * scale / n if value is not None and n else None


def idle_growth(rows):
    """{"rss", "managed", "native": {server: {round: KiB per connection}}} of perf/run.sh's idle rows: (held −
    before) ÷ connections held; managed from /perf/gc's live bytes, native (and other) = VmRSS right after those
    forced GCs − managed."""
    out = {"rss": {}, "managed": {}, "native": {}}
    for r in rows:
        n = num(r.get("connections_held")) if r["kind"] == "idle" else None
        if not n or n < 0:
            continue

        def growth(column, scale=1.0):
            held, before = num(r.get(column.format("held"))), num(r.get(column.format("before")))
            return None if held is None or before is None else (held - before) * scale / n

        managed, rss_gc = growth("managed_{}_bytes", 1 / 1024), growth("rss_{}_gc_kib")
        native = rss_gc - managed if managed is not None and rss_gc is not None else None
        for key, value in (("rss", growth("rss_{}_kib")), ("managed", managed), ("native", native)):
            if value is not None:
                out[key].setdefault(r["server"], {})[r["round"]] = value
    return out
