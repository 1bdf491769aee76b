#!/usr/bin/env bash
# perf/warmup-knobs.sh — how long the sample takes to reach full speed under load, with the runtime's
# default settings and with settings that could shorten it (ReadyToRun, TieredPGO, TieredCompilation knobs).
#
#   perf/warmup-knobs.sh                 every setting, both transports, 60 s each, 2 rounds (about 25 minutes)
#   perf/warmup-knobs.sh --seconds 30 --rounds 1 --configs "default r2r"
#   perf/warmup-knobs.sh --report-only   redraw warmup-knobs.md from warmup-knobs.csv
#
# For each setting and transport: a fresh server on core 0 (DOTNET_gcServer=0, as in run.sh), then
# back-to-back windows of 2 s of perf/warmup.lua (the same mix as run.sh's warm-up) from core 1, and the
# requests/s of each window, and its requests per CPU-second of the server (utime + stime from /proc), which
# others' work on this shared machine disturbs much less than requests/s. Writes
# perf/results/warmup-knobs.{csv,md}. Traffic to 127.0.0.1 only.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"
REPO_DIR=$(dirname "$PERF_DIR")
CACHE_DIR=$PERF_DIR/.cache
FILES_DIR=$CACHE_DIR/files
SAMPLE_PROJECT=$REPO_DIR/samples/StaticFileServer
JIT_DIR=$CACHE_DIR/sample-knobs-jit     # dotnet build output (IL only; the framework itself is ReadyToRun)
R2R_DIR=$CACHE_DIR/sample-knobs-r2r     # dotnet publish -p:PublishReadyToRun=true (app and SpliceTransport precompiled)
RESULTS_DIR=$PERF_DIR/results
readonly PORT=18085 SERVER_CORE=0 CLIENT_CORE=1 CONNECTIONS=32 WINDOW_S=2
readonly STABLE_WINDOWS=3 RISE_PCT=3   # run.sh's rule: none of the last 3 windows > 3% above the best before them

# name -> "binary-variant env..."
declare -A CONFIG=(
  [default]="jit"
  [r2r]="r2r"
  [no-pgo]="jit DOTNET_TieredPGO=0"
  [r2r-no-pgo]="r2r DOTNET_TieredPGO=0"
  [no-tiering]="jit DOTNET_TieredCompilation=0"
  [no-delay]="jit DOTNET_TC_CallCountingDelayMs=0"
)
CONFIGS="default r2r no-pgo r2r-no-pgo no-tiering no-delay"
SECONDS_PER_RUN=60
ROUNDS=2
SERVER_PID=""
CLIENT_PID=""
REPORT_ONLY=0


while (($#)); do
  case "$1" in
    --seconds) SECONDS_PER_RUN=${2:?}; shift ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --configs) CONFIGS=${2:?}; shift ;;
    --report-only) REPORT_ONLY=1 ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done

readonly STOP_TIMEOUT_S=5             # after TERM, a server or client gets this long before KILL
cleanup() { local s=$?; stop_pid "$CLIENT_PID"; stop_pid "$SERVER_PID"; exit "$s"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in wrk curl taskset; do command -v $tool >/dev/null || die "$tool is missing (perf/run.sh installs it)"; done
[[ -f $FILES_DIR/1MiB.bin && -f $FILES_DIR/4KiB.bin && -f $FILES_DIR/64KiB.bin ]] || die "run perf/run.sh --quick once first (it makes the test files)"

COMMIT=$(git -C "$REPO_DIR" rev-parse --short HEAD)
SRC_COMMIT=$(git -C "$REPO_DIR" log -1 --format=%h -- src)
CSV=$RESULTS_DIR/warmup-knobs.csv
if ((!REPORT_ONLY)); then
log "building the sample (Release) and a ReadyToRun publish of it"
rm -rf "$JIT_DIR" "$R2R_DIR"
dotnet build -c Release "$SAMPLE_PROJECT" -nologo -v q -o "$JIT_DIR" >/tmp/warmup-knobs-build.log 2>&1 \
  || { tail -n 30 /tmp/warmup-knobs-build.log >&2; die "dotnet build failed"; }
dotnet publish -c Release "$SAMPLE_PROJECT" -nologo -v q -r linux-x64 --self-contained false \
  -p:PublishReadyToRun=true -o "$R2R_DIR" >/tmp/warmup-knobs-publish.log 2>&1 \
  || { tail -n 30 /tmp/warmup-knobs-publish.log >&2; die "dotnet publish -p:PublishReadyToRun=true failed"; }

echo "round,config,transport,window,elapsed_s,requests_per_s,server_cpu_s,requests_per_cpu_s" >"$CSV"
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
for ((round = 1; round <= ROUNDS; round++)); do
  for config in $CONFIGS; do
    read -r variant envs <<<"${CONFIG[$config]:?unknown config $config}"
    for transport in splice sockets; do
      bin=$JIT_DIR/StaticFileServer; [[ $variant == r2r ]] && bin=$R2R_DIR/StaticFileServer
      env DOTNET_gcServer=0 $envs taskset -c $SERVER_CORE "$bin" --root "$FILES_DIR" \
        --urls "http://127.0.0.1:$PORT" --transport "$transport" >/tmp/warmup-knobs-server.log 2>&1 &
      SERVER_PID=$!
      deadline=$((SECONDS + 30))
      until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/plaintext"; do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat /tmp/warmup-knobs-server.log >&2; die "server exited"; }
        ((SECONDS < deadline)) || die "server did not answer within 30 s"
        sleep 0.1
      done
      started=$SECONDS rates=()
      for ((w = 1; w * WINDOW_S <= SECONDS_PER_RUN; w++)); do
        ticks_before=$(cpu_ticks "$SERVER_PID")
        taskset -c $CLIENT_CORE wrk -t1 -c$CONNECTIONS -d${WINDOW_S}s -s "$PERF_DIR/warmup.lua" \
          "http://127.0.0.1:$PORT/" >/tmp/warmup-knobs-wrk.out 2>&1 &
        CLIENT_PID=$!
        wait "$CLIENT_PID" || die "wrk failed"
        CLIENT_PID=""
        ticks=$(($(cpu_ticks "$SERVER_PID") - ticks_before))
        rate=$(awk '/^Requests\/sec:/ {print $2}' /tmp/warmup-knobs-wrk.out)
        count=$(awk '/ requests in / {print $1}' /tmp/warmup-knobs-wrk.out)
        rates+=("$rate")
        awk -v r="$round" -v c="$config" -v t="$transport" -v w="$w" -v e="$((SECONDS - started))" -v rate="$rate" \
            -v n="$count" -v ticks="$ticks" -v hz="$CLK_TCK" \
            'BEGIN { cpu = ticks / hz; printf "%s,%s,%s,%s,%s,%s,%.2f,%.0f\n", r, c, t, w, e, rate, cpu, (cpu > 0 ? n / cpu : 0) }' >>"$CSV"
      done
      stop_pid "$SERVER_PID"; SERVER_PID=""
      log "round $round, $config, $transport: ${rates[*]}"
    done
  done
done
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo "$LOAD_AT_END" >"$RESULTS_DIR/warmup-knobs-load.txt"
fi
LOAD_AT_END=$(cat "$RESULTS_DIR/warmup-knobs-load.txt" 2>/dev/null || echo unknown)

python3 - "$CSV" "$RESULTS_DIR/warmup-knobs.md" "$COMMIT" "$SRC_COMMIT" "$SECONDS_PER_RUN" "$STABLE_WINDOWS" "$RISE_PCT" \
  "$LOAD_AT_END" <<'EOF'
import csv, statistics, sys
from collections import defaultdict
path, md, commit, src_commit, total, k, pct, load = sys.argv[1:]
k, pct = int(k), float(pct)
series = defaultdict(list)   # (config, transport, round) -> [(elapsed, req/s, req per cpu-s, server cpu-s so far)]
for r in csv.DictReader(open(path)):
    key = (r["config"], r["transport"], r["round"])
    cpu_so_far = (series[key][-1][3] if series[key] else 0) + float(r["server_cpu_s"])
    series[key].append((int(r["elapsed_s"]), float(r["requests_per_s"]), float(r["requests_per_cpu_s"]), cpu_so_far))

def steady_after(points, i, x=0):
    """Seconds (x=0) or server CPU-seconds (x=3) until metric i reaches 90% of its own steady figure (median
    of the last 5 windows) and stays there, judged after the fact from the whole curve; None if never."""
    rates = [p[i] for p in points]
    steady = statistics.median(rates[-5:])
    for n in range(len(rates)):
        if all(v >= 0.9 * steady for v in rates[n:]):
            return points[n][x] if n > 0 else 0
    return None

def mm(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals: return "not reached"
    m = statistics.median(vals)
    return fmt(m) if len(vals) == 1 else f"{fmt(m)} ({fmt(min(vals))}–{fmt(max(vals))})"

configs = list(dict.fromkeys(c for c, _, _ in series))
out = ["# Warm-up with and without runtime settings", "",
       f"`perf/warmup-knobs.sh`, commit {commit} (src/ as of {src_commit}); load average at the end {load}. "
       f"A fresh server per run, then {total} s of back-to-back 2 s windows of `warmup.lua`, 32 connections; "
       "server on core 0, wrk on core 1. Figures are medians over rounds (min–max). "
       "**steady after**: seconds (and server CPU-seconds) until the figure reaches 90% of its own steady "
       "value and stays there, judged from the whole curve. **first 10 s / first minute**: mean of those windows. **steady**: median of the last "
       "5 windows. All ÷ the default setting's steady figure of the same transport. Two metrics: requests/s "
       "(what a client sees, but others' work on this shared machine moves it), and requests per CPU-second "
       "of the server (how much of its core's time the server needs per request; JIT work shows up in it, and "
       "others' work much less).", ""]
for i, metric in ((2, "requests per server CPU-second"), (1, "requests/s")):
    default_steady = {}
    for t in ("splice", "sockets"):
        tails = [statistics.median([q[i] for q in p[-5:]]) for (c, tt, _), p in series.items() if c == "default" and tt == t]
        default_steady[t] = statistics.median(tails) if tails else None
    out += [f"## {metric}", "",
            "| setting | transport | steady after, s | steady after, server CPU-s | first 10 s | first minute | steady | rounds |",
            "|---|---|---|---|---|---|---|---|"]
    for c in configs:
        for t in ("splice", "sockets"):
            runs = [p for (cc, tt, _), p in series.items() if cc == c and tt == t]
            if not runs: continue
            base = default_steady[t] or 1
            steady = [steady_after(p, i) for p in runs]
            first10 = [statistics.mean([q[i] for q in p if q[0] <= 10]) / base for p in runs]
            minute = [statistics.mean([q[i] for q in p if q[0] <= 60]) / base for p in runs]
            tail = [statistics.median([q[i] for q in p[-5:]]) / base for p in runs]
            steady_cpu = [steady_after(p, i, 3) for p in runs]
            out.append(f"| {c} | {t} | {mm(steady, lambda x: f'{x:.0f}')} | {mm(steady_cpu, lambda x: f'{x:.0f}')} | "
                       f"{mm(first10, lambda x: f'{x:.2f}×')} | "
                       f"{mm(minute, lambda x: f'{x:.2f}×')} | {mm(tail, lambda x: f'{x:.2f}×')} | {len(runs)} |")
    out += ["", f"Default steady {metric}: " + ", ".join(f"{t} {v:,.0f}" for t, v in default_steady.items() if v) + ".", ""]
out += ["Settings: default = `dotnet build -c Release` (the framework is ReadyToRun, the app and "
        "SpliceTransport are IL); r2r = `dotnet publish -r linux-x64 -p:PublishReadyToRun=true`; no-pgo = "
        "`DOTNET_TieredPGO=0`; no-tiering = `DOTNET_TieredCompilation=0` (everything fully optimized at first "
        "call, no PGO); no-delay = `DOTNET_TC_CallCountingDelayMs=0`. Every window is in `warmup-knobs.csv`.", ""]
open(md, "w").write("\n".join(out))
EOF
log "wrote perf/results/warmup-knobs.md and warmup-knobs.csv"
