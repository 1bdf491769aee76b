"""What perf/'s report scripts share: the raw files, "median (min–max)" cells, markdown tables and the division per
response. Standard library only."""
import csv
import os
import statistics
import sys
from pathlib import Path

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FILE_BYTES = {"4KiB": 4096, "64KiB": 65536, "1MiB": 1048576, "32MiB": 33554432}
two = "{:.2f}".format


def name_arg(default=None):
    """NAME from a report's command line, `--name NAME`, or the default without arguments; anything else: usage."""
    if len(sys.argv) == 3 and sys.argv[1] == "--name" or len(sys.argv) == 1 and default:
        return sys.argv[2] if len(sys.argv) == 3 else default
    script = os.path.basename(sys.argv[0])
    sys.exit(f"usage: python3 perf/{script} --name NAME" + (f" (default {default})" if default else ""))


def read_lines(path, optional=False):
    """A file's lines without their ends; [] for a missing optional one."""
    return [] if optional and not os.path.exists(path) else Path(path).read_text().splitlines()


def read_meta(path, optional=False):   # a NAME-meta.txt's key=value lines
    return dict(line.partition("=")[::2] for line in read_lines(path, optional))


def read_rows(path, optional=False):
    """The rows of a CSV file as dicts (no field spans lines)."""
    return list(csv.DictReader(read_lines(path, optional)))


def num(value):
    """A CSV field as a float; None when it is empty or missing."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt(value, digits=2):
    """1,234 / 12.3 / 1.23 (digits below 10); – for None."""
    return "–" if value is None else (f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10
                                      else f"{value:.{digits}f}")


def cell(vals, form=fmt, unit="", empty="–", always=False):
    """The median of a list (or of a {round: value} dict's values; None values left out) with (min–max) after it,
    left out for one value and, unless always, for equal ones."""
    if not (vals := [v for v in ((vals.values() if isinstance(vals, dict) else vals) or []) if v is not None]):
        return empty
    text = form(statistics.median(vals)) + unit
    single = len(vals) == 1 or not always and min(vals) == max(vals)
    return text if single else f"{text} ({form(min(vals))}–{form(max(vals))})"


def quotient(a, b, digits=2, empty="–"):
    """a ÷ b as "1.23×"."""
    return f"{a / b:.{digits}f}×" if a is not None and b else empty


def row(cells):
    """A markdown table row; a None cell is left blank, one space wide."""
    return "|" + "|".join(" " if c is None else f" {c} " for c in cells) + "|"


def table(head, rows):
    return [row(head), "|" + "---|" * len(head)] + [row(r) for r in rows]


def responses(row):
    """Responses of one pass: the requests wrk sent (counted.lua; the server handled the last one on each connection
    although wrk stopped before counting its response), or for files of 1 MiB and more the bytes wrk read over the
    file's size (downloads still running when wrk stops cost CPU and syscalls too; headers are < 0.03% of them)."""
    size = FILE_BYTES.get(row.get("file") or row["scenario"].split("-")[0])
    if size and size >= FILE_BYTES["1MiB"] and num(row.get("bytes")):
        return num(row["bytes"]) / size
    return num(row.get("sent")) or num(row["requests"])


def per_response(row, column, scale=1):
    """row[column] × scale ÷ responses(row); None when either is missing."""
    value, n = num(row.get(column)), responses(row)
    return value * scale / n if value is not None and n else None
