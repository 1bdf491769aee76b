#!/usr/bin/env bash
# perf/soak.sh — leaks and errors under mixed load (perf/README.md, "soak.sh"); exits 1 on FAIL; run as root.
#   perf/soak.sh [--minutes N]    N >= 1 minutes of load, default 2, about N + 2 in all; RSS is judged from N >= 2
#   perf/soak.sh --port P         serve on 127.0.0.1:P (default 5317; soak runs keep to 5300-5399)
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"

declare -A PORT=([soak]=5317)           # soak runs use 5300-5399, so they do not meet other runs' servers
readonly WARMUP_S=15                    # mixed load before the baseline, so JIT tiering, pools and buffers settle
readonly SAMPLE_INTERVAL_S=60 EVIDENCE_LINES=40   # a row per minute of load; at most this much of each evidence
readonly DRAIN_TIMEOUT_S=10 SETTLE_S=1  # after the load: connections gone by then, then a pause for the last closes
readonly MAX_ITERATIONS=100000 RETRY_PAUSE_S=1   # loops bounded in count too; a pause after a run that failed at once
# wrk: a run shorter than WRK_MIN_RUN_S is not worth it; loopback answers in milliseconds, so a response WRK_TIMEOUT
# late is an error; pipelined, 16 requests a write as in TechEmpower's test.
readonly WRK_RUN_S=15 WRK_MIN_RUN_S=2 WRK_TIMEOUT=10s PIPELINE_DEPTH=16
declare -A CONNECTIONS=([plaintext]=32 [pipelined]=8 [file-4KiB]=16 [file-1MiB]=8)
# 64 MiB at 50 MiB/s (curl's M is MiB) takes 1.3 s, so each --max-time in turn ends a download mid-body (curl's exit
# 28: the intended abort); the ranges start at an odd offset, aligned with no page or block size.
readonly ABORT_LOOPS=2 ABORT_RATE=50M ABORT_AFTER_S=(0.05 0.1 0.2 0.4) ABORT_RANGE_START=1048577 CURL_TIMED_OUT=28
# 64 MiB at 4 MiB/s takes 16 s, the server's sends waiting on a full socket most of the time: a slow download
# starts only SLOW_START_S before the end, and one taking SLOW_MAX_TIME_S means a stalled server.
readonly SLOW_READERS=4 SLOW_RATE=4M SLOW_START_S=20 SLOW_MAX_TIME_S=60
FILES=(4KiB 1MiB 64MiB)
declare -A FILE_SIZE=([4KiB]=4096 [1MiB]=1048576 [64MiB]=67108864)
# The verdict's thresholds (threads: once the pool has retired its idle workers, or after THREAD_SETTLE_TIMEOUT_S)
# and the GC setting that makes RSS follow what the server holds: perf/results/README.md, "Soak".
readonly FD_MARGIN=16 THREAD_MARGIN=4 THREAD_SETTLE_TIMEOUT_S=30 RSS_GROWTH_LIMIT_MIB=20
readonly GC_ENV=DOTNET_GCgen0size=0x100000

MINUTES=2 SUMMARY_PRINTED=0 LOAD_PIDS=() ROWS=() FAIL_REASONS=()   # ROWS: one table row per sample

parse_args() {
  while (($#)); do
    case "$1" in
      --minutes) MINUTES=${2:?--minutes needs a number}; shift 2 ;;
      --port) PORT[soak]=${2:?--port needs a number}; shift 2 ;;
      -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; SUMMARY_PRINTED=1; exit 0 ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
  done
  [[ $MINUTES =~ ^[1-9][0-9]*$ ]] || die "--minutes must be a whole number >= 1, not '$MINUTES'"
  [[ ${PORT[soak]} =~ ^[1-9][0-9]{0,4}$ ]] && ((PORT[soak] < 65536)) || die "--port must be a TCP port, not '${PORT[soak]}'"
}

server_alive() { kill -0 "${SERVER_PID[soak]}" 2>/dev/null; }
proc_status() { awk -v key="$1:" '$1 == key {print $2}' "/proc/${SERVER_PID[soak]}/status" 2>/dev/null || echo 0; }
log_counts() { awk '/^fail: /{f++} /^crit: /{c++} /^warn: /{w++} END {print f + 0, c + 0, w + 0}' "$TMP_DIR/soak.log"; }
# Server-side sockets of the port that still hold a descriptor (TIME-WAIT holds none; LISTEN is expected).
open_server_sockets() { ss -Htan "( sport = :${PORT[soak]} )" | awk '$1 != "LISTEN" && $1 != "TIME-WAIT"' | wc -l; }

# lib.sh's cleanup calls this: the load loops, and the one summary line even when the script stops early.
cleanup_more() {
  stop_pids LOAD_PIDS
  ((SUMMARY_PRINTED)) || echo "soak: FAIL (${DIED:-stopped early; see the messages above})"
}

# In the background until LOAD_DEADLINE, client runs one after another (run_client, so TERM and INT stop the client
# too), a line each in <dir>/clients.log: "<name> exit=<status>" and wrk's WRK_RESULT fields or curl's http= bytes=.
#   client_loop <dir> <name> wrk <perf/'s Lua script> <path> [-- <depth>]     client_loop <dir> <name> abort|slow
client_loop() {
  local dir=$1 name=$2 kind=$3 out=$1/$2.out i left status cmd
  trap 'stop_pid "${CLIENT_PID:-}"; exit 0' TERM INT
  for ((i = 0; i < MAX_ITERATIONS; i++)); do
    left=$((LOAD_DEADLINE - EPOCHSECONDS))
    case "$kind" in
      wrk) ((left >= WRK_MIN_RUN_S)) || break
           cmd=(wrk -t1 -c"${CONNECTIONS[$name]}" -d$((left < WRK_RUN_S ? left : WRK_RUN_S))s --timeout "$WRK_TIMEOUT")
           cmd+=(-s "$PERF_DIR/$4" "$BASE_URL$5" "${@:6}") ;;
      abort) ((left > 0)) || break
           cmd=(curl --limit-rate "$ABORT_RATE" --max-time "${ABORT_AFTER_S[i % ${#ABORT_AFTER_S[@]}]}")
           ((i % 2 == 0)) || cmd+=(--range "$ABORT_RANGE_START-") ;;
      slow) ((left >= SLOW_START_S)) || break
           cmd=(curl -f --limit-rate "$SLOW_RATE" --max-time "$SLOW_MAX_TIME_S") ;;   # -f: exit 22 on an HTTP error
    esac
    [[ $kind == wrk ]] || cmd+=(-s -o /dev/null -w 'http=%{http_code} bytes=%{size_download}\n' "$BASE_URL/64MiB.bin")
    run_client "$out" "${cmd[@]}" && status=0 || status=$?
    echo "$name exit=$status $(sed -n 's/^WRK_RESULT //p; /^http=/p' "$out")" >>"$dir/clients.log"
    ((status == 0 || status == CURL_TIMED_OUT)) && continue
    [[ $kind == abort ]] || { echo "--- $name: ${cmd[*]} (exit $status)"; cat "$out"; } >>"$dir/failures.txt"
    sleep "$RETRY_PAUSE_S"
  done
}

# run_load <name> <seconds>: every client loop until now + seconds (logs in TMP_DIR/<name>), a row each full minute;
# waits for the loops while the server runs (a last slow download may end SLOW_MAX_TIME_S late), lets it close every
# connection, and after the soak waits for the thread pool to retire the workers the load added.
run_load() {
  local dir=$TMP_DIR/$1 i minute deadline limit
  SOAK_STARTED=$EPOCHSECONDS LOAD_DEADLINE=$((EPOCHSECONDS + $2))
  mkdir -p "$dir"
  client_loop "$dir" plaintext wrk report.lua /plaintext & LOAD_PIDS+=($!)
  client_loop "$dir" pipelined wrk pipeline.lua /plaintext -- "$PIPELINE_DEPTH" & LOAD_PIDS+=($!)
  client_loop "$dir" file-4KiB wrk report.lua /4KiB.bin & LOAD_PIDS+=($!)
  client_loop "$dir" file-1MiB wrk report.lua /1MiB.bin & LOAD_PIDS+=($!)
  for ((i = 0; i < ABORT_LOOPS; i++)); do client_loop "$dir" "abort-$i" abort & LOAD_PIDS+=($!); done
  for ((i = 0; i < SLOW_READERS; i++)); do client_loop "$dir" "slow-$i" slow & LOAD_PIDS+=($!); done
  for ((minute = 1; minute <= $2 / SAMPLE_INTERVAL_S; minute++)); do
    while ((EPOCHSECONDS < SOAK_STARTED + minute * SAMPLE_INTERVAL_S)) && server_alive; do sleep 1; done
    server_alive || break
    sample "min-$minute" "$dir"
  done
  deadline=$((LOAD_DEADLINE + SLOW_MAX_TIME_S + STOP_TIMEOUT_S))
  while kill -0 "${LOAD_PIDS[@]}" 2>/dev/null && server_alive && ((EPOCHSECONDS < deadline)); do sleep 0.2; done
  stop_pids LOAD_PIDS
  deadline=$((EPOCHSECONDS + DRAIN_TIMEOUT_S))
  while server_alive && (($(open_server_sockets) > 0)) && ((EPOCHSECONDS < deadline)); do sleep 0.2; done
  sleep "$SETTLE_S"
  [[ $1 == soak ]] || return 0
  read -r _ _ _ limit _ <<<"${ROWS[0]}"
  deadline=$((EPOCHSECONDS + THREAD_SETTLE_TIMEOUT_S))
  while ((EPOCHSECONDS < deadline && $(proc_status Threads) > limit + THREAD_MARGIN)); do sleep 1; done
}

# tally <dir> [by-kind]: "requests client_errors aborted abort_other" from its clients.log, or an entry per kind of
# client (a load that silently did nothing shows). Requests: wrk's responses, downloads started; errors: wrk's socket
# errors, non-2xx/3xx and failed runs, failed slow downloads; aborted: curl's exit 28 or complete; abort_other: else.
tally() {
  { cat "$1/clients.log" 2>/dev/null || true; } | awk -v by_kind="${2:-}" -v size="${FILE_SIZE[64MiB]}" -v timed_out=$CURL_TIMED_OUT '
    BEGIN { nk = split("plaintext pipelined file-4KiB file-1MiB abort slow", kinds); for (i in kinds) n[kinds[i]] = 0 }
    { k = $1; sub(/-[0-9]+$/, "", k); if (!(k in n)) { kinds[++nk] = k; n[k] = e[k] = a[k] = o[k] = 0 }
      delete f; for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
    k == "abort" { n[k]++; if (f["exit"] == timed_out || f["exit"] == 0) a[k]++; else o[k]++; next }
    k == "slow" { n[k]++; e[k] += (f["exit"] != 0 || f["http"] != 200 || f["bytes"] != size); next }
    { n[k] += f["requests"]; e[k] += (f["exit"] != 0 || f["requests"] == "") + f["connect"] + f["read"] + f["write"]
      e[k] += f["status"] + f["timeout"] }
    END { for (i = 1; i <= nk; i++) { k = kinds[i]; N += n[k]; E += e[k]; A += a[k]; O += o[k]
            if (by_kind) printf "%s%s: %d requests, %d errors", (i > 1 ? "; " : ""), k, n[k], e[k] }
          if (!by_kind) printf "%d %d %d %d\n", N, E, A, O }'
}

# sample <label> <client logs' dir>: a row from the server's /proc entry, the client logs so far and the server's log.
sample() {
  local fds=exited threads=exited rss=exited
  if server_alive; then
    fds=$(find "/proc/${SERVER_PID[soak]}/fd" -mindepth 1 -maxdepth 1 | wc -l) threads=$(proc_status Threads)
    rss=$(proc_status VmRSS | awk '{printf "%.1f", $1 / 1024}')
  fi
  ROWS+=("$1 $((EPOCHSECONDS - SOAK_STARTED)) $fds $threads $rss $(tally "$2") $(log_counts)")
  log "sample ${ROWS[-1]} (label s fds threads rss_mib requests errors aborted other log_fail log_crit log_warn)"
}

# PASS or FAIL from ROWS (start: the baseline, with the warm-up's counts; a row per minute; end); sets SUMMARY.
judge() {
  local b e verdict=PASS status growth
  read -ra b <<<"${ROWS[0]}"
  read -ra e <<<"${ROWS[-1]}"
  local minutes=("${ROWS[@]:1:${#ROWS[@]}-2}") errors=$((b[6] + e[6] + e[9] + e[10])) rss="${b[4]}->${e[4]} MiB"
  ((b[6] + e[6] == 0)) || FAIL_REASONS+=("$((b[6] + e[6])) client errors (${b[6]} during warm-up)")
  ((e[9] + e[10] == 0)) || FAIL_REASONS+=("$((e[9] + e[10])) server log errors (fail/crit)")
  if [[ ${e[2]} == exited ]]; then
    wait "${SERVER_PID[soak]}" && status=0 || status=$?
    FAIL_REASONS+=("the server exited (exit status $status; see the rows)") errors=$((errors + 1))
  else
    ((e[2] - b[2] <= FD_MARGIN)) \
      || FAIL_REASONS+=("fds grew by $((e[2] - b[2])) (limit $FD_MARGIN; $(open_server_sockets) server sockets open)")
    ((e[3] - b[3] <= THREAD_MARGIN)) || FAIL_REASONS+=("threads grew by $((e[3] - b[3])) (limit $THREAD_MARGIN)")
    ((${#minutes[@]} >= 2)) || rss+=" (not judged: fewer than 2 minutes)"
    if ((${#minutes[@]} >= 2)); then   # the mean RSS of the minutes' second half against the first half's
      read -r growth rss < <(printf '%s\n' "${minutes[@]}" | awk -v h=$((${#minutes[@]} / 2)) '{ rss[NR] = $5 }
        END { for (i = 1; i <= h; i++) { a += rss[i] / h; b += rss[NR - h + i] / h }
              printf "%.1f %.1f->%.1f MiB\n", b - a, a, b }')
      awk -v g="$growth" -v max="$RSS_GROWTH_LIMIT_MIB" 'BEGIN { exit (g + 0 > max + 0) }' \
        || FAIL_REASONS+=("RSS grew by $growth MiB between the halves of the minutes (limit $RSS_GROWTH_LIMIT_MIB)")
    fi
  fi
  ((${#FAIL_REASONS[@]} == 0)) || verdict="FAIL ($(printf '%s; ' "${FAIL_REASONS[@]}" | sed 's/; $//'))"
  SUMMARY="soak: $verdict $MINUTES min, ${e[5]} requests, $errors errors, fds ${b[2]}->${e[2]},\
 threads ${b[3]}->${e[3]}, rss $rss"
}

main() {
  begin_run soak                      # first: an argument error, too, ends with the one summary line
  parse_args "$@"
  BASE_URL=$(server_url soak)
  install_packages_for wrk=wrk curl=curl taskset=util-linux ss=iproute2
  ulimit -n "$(ulimit -Hn)"   # wrk and the server together hold a few hundred sockets; raise anyway
  build_sample
  make_files
  SERVER_COMMAND=$(dotnet_server_command splice "${PORT[soak]}" "$GC_ENV")
  start_server_process soak "$SERVER_COMMAND"   # its log, TMP_DIR/soak.log, has every "warn:", "fail:" and "crit:"
  wait_for_port soak
  check_server soak
  log "server pid ${SERVER_PID[soak]} answers correctly; warming up for ${WARMUP_S}s"
  run_load warmup "$WARMUP_S"
  sample start "$TMP_DIR/warmup"
  server_alive && run_load soak $((MINUTES * SAMPLE_INTERVAL_S))
  sample end "$TMP_DIR/soak"          # after a fatal warm-up, an end row of nothing: the table keeps its usual ends
  judge
  cat <<EOF | tee "$RESULTS_DIR/soak.md" | sed '$d'
# Soak test: $MINUTES minutes of mixed load on SpliceTransport

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILD_COMMIT (\`src/\` as of $SRC_COMMIT); kernel $(uname -sr); .NET SDK $(dotnet --version)
- Command: \`perf/soak.sh --minutes $MINUTES\`; server: \`$SERVER_COMMAND\`
- Load, at once, clients on core $CLIENT_CORE: wrk /plaintext (${CONNECTIONS[plaintext]} conns), pipelined /plaintext (${CONNECTIONS[pipelined]} conns × $PIPELINE_DEPTH), 4 KiB file (${CONNECTIONS[file-4KiB]} conns), 1 MiB file (${CONNECTIONS[file-1MiB]} conns), in $WRK_RUN_S s runs; $ABORT_LOOPS loops aborting 64 MiB downloads after ${ABORT_AFTER_S[*]} s; $SLOW_READERS slow readers of the 64 MiB file at $SLOW_RATE/s. Warm-up $WARMUP_S s of the same load.
- Thresholds: fds after drain ≤ baseline + $FD_MARGIN; threads ≤ baseline + $THREAD_MARGIN; mean RSS of the second half of the minutes ≤ first half + $RSS_GROWTH_LIMIT_MIB MiB; no error of any kind.

Rows: \`start\` after warm-up and drain (the baseline), one per minute of load, \`end\` after the load stopped and connections drained. Requests and errors are cumulative over the soak (the start row: warm-up); wrk's counts arrive when each $WRK_RUN_S s run ends.

| sample | s | fds | threads | RSS MiB | requests | client errors | log fail | log crit | log warn | aborted downloads (other endings) |
|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}" | awk '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) |\n",
  $1, $2, $3, $4, $5, $6, $7, $10, $11, $12, $8, $9 }')

Clients over the soak: $(tally "$TMP_DIR/soak" by-kind).

\`$SUMMARY\`
EOF
  grep -E -A4 '^(fail|crit): ' "$TMP_DIR/soak.log" | head -n "$EVIDENCE_LINES" || true   # evidence: the first server log errors,
  cat "$TMP_DIR"/{warmup,soak}/failures.txt 2>/dev/null | head -n "$EVIDENCE_LINES" || true   # failed wrk runs and slow downloads
  echo "(server log: $(keep_server_log soak 2>/dev/null); written to perf/results/soak.md)"
  echo "$SUMMARY"
  SUMMARY_PRINTED=1
  ((${#FAIL_REASONS[@]} == 0))
}

main "$@"
