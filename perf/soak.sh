#!/usr/bin/env bash
# perf/soak.sh — a bounded soak test: N minutes of mixed load against the sample on SpliceTransport,
# watching the server for leaks (descriptors, threads, memory) and for any error.
#
#   perf/soak.sh                  2 minutes of load (3 to 4 minutes in all, with build, warm-up and drain)
#   perf/soak.sh --minutes N      N minutes of load (N >= 1; memory growth is judged from N >= 2)
#   perf/soak.sh --port P         serve on 127.0.0.1:P (default 5317; soak runs keep to 5300-5399)
#
# All at once, each client on core 1 and the server alone on core 0: wrk on /plaintext, on a 4 KiB and a
# 1 MiB file, and 16-deep pipelined /plaintext (each wrk run is short, so connections come and go); curl
# loops that abort 64 MiB downloads part-way (whole file or a range); slow readers taking the 64 MiB file
# at a throttled rate. The server's descriptors, threads and VmRSS are sampled after warm-up, every minute,
# and once the load has stopped, its connections have drained and the thread pool has retired idle workers.
# Exits 0 (PASS) or 1 (FAIL: any error, the server exiting, or growth). The last line printed is the one
# summary line; the table and that line are also written to perf/results/soak.md.
# Run as root (it apt-get installs wrk and curl if missing). Traffic goes to 127.0.0.1 only.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"
REPO_DIR=$(dirname "$PERF_DIR")
CACHE_DIR=$PERF_DIR/.cache            # git-ignored
SAMPLE_PROJECT=$REPO_DIR/samples/StaticFileServer
SAMPLE_BUILD_DIR=$SAMPLE_PROJECT/bin/Release/net10.0
# The server runs from a private copy of the build, so that a `dotnet build` of the tree meanwhile does not
# change it; not run.sh's copy, so that a benchmark started meanwhile does not replace it either.
SAMPLE_COPY_DIR=$CACHE_DIR/soak-sample
SAMPLE_BIN=$SAMPLE_COPY_DIR/StaticFileServer
LOG_DIR=$CACHE_DIR/logs               # every run's server log is kept here
RESULT_FILE=$PERF_DIR/results/soak.md

readonly SERVER_CORE=0                # the server alone on one core...
readonly CLIENT_CORE=1                # ...every client on the other (the machine has two)
readonly DEFAULT_PORT=5317            # soak runs use 5300-5399, so they do not meet other runs' servers
readonly DEFAULT_MINUTES=2
readonly SAMPLE_INTERVAL_S=60         # one row of the table per minute of load
readonly STARTUP_TIMEOUT_S=30         # a server not answering by then has failed to start
readonly STOP_TIMEOUT_S=5             # after TERM, a server or client gets this long before KILL
readonly WARMUP_S=15                  # mixed load before the baseline, so JIT tiering, pools and buffers settle
readonly DRAIN_TIMEOUT_S=10           # after the load, the server's connections must be gone by then...
readonly SETTLE_S=1                   # ...and then this pause lets its last closes finish before sampling
readonly MAX_ITERATIONS=100000        # every load loop is bounded in count as well as by the clock
readonly PLAINTEXT_BODY="Hello, World!"
readonly RETRY_PAUSE_S=1              # after a client run that failed at once, e.g. on a dead server
readonly EVIDENCE_LINES=40            # at most this many lines of each kind of failure are printed

# wrk loads: each run lasts WRK_RUN_S, and the loop starts the next until the end, so connections are
# opened and closed all along instead of once.
readonly WRK_RUN_S=15
readonly WRK_MIN_RUN_S=2              # a shorter remainder is not worth a run
readonly WRK_TIMEOUT=10s              # loopback answers in milliseconds: a response this late is an error
readonly PLAINTEXT_CONNECTIONS=32
readonly PIPELINE_CONNECTIONS=8
readonly PIPELINE_DEPTH=16            # requests per write (perf/pipeline.lua; TechEmpower's depth)
readonly SMALL_FILE_CONNECTIONS=16    # 4 KiB file
readonly MEDIUM_FILE_CONNECTIONS=8    # 1 MiB file

# Aborted downloads: curl reads the 64 MiB file no faster than ABORT_RATE, so it cannot finish before its
# --max-time (one of ABORT_AFTER_S, in turn) ends it mid-body; every other attempt asks for a range.
readonly ABORT_LOOPS=2
readonly ABORT_RATE=50M               # curl's M is MiB: 64 MiB takes 1.3 s, longer than any ABORT_AFTER_S
readonly ABORT_AFTER_S=(0.05 0.1 0.2 0.4)
readonly ABORT_RANGE_START=1048577    # 1 MiB + 1: an odd offset, aligned with no page or block size
readonly CURL_TIMED_OUT=28            # curl's exit status when --max-time ends it: the intended abort

# Slow readers: each takes the whole 64 MiB file at SLOW_RATE (16 s), far more than the socket buffers
# hold, so the server's sends wait on a full socket most of the time. A slow download must complete.
readonly SLOW_READERS=4
readonly SLOW_RATE=4M
readonly SLOW_EXPECTED_S=16           # 64 MiB at 4 MiB/s
readonly SLOW_SLACK_S=4               # a new slow download starts only if it can end before the load does
readonly SLOW_MAX_TIME_S=60           # far past SLOW_EXPECTED_S: a download this slow means a stalled server

# Test files: name and size, random bytes.
readonly FILE_NAMES=(4KiB 1MiB 64MiB)
FILES=("${FILE_NAMES[@]}")            # what lib.sh's make_files generates (once; cached)
FILES_DIR=$CACHE_DIR/files
declare -A FILE_SIZE=([4KiB]=4096 [1MiB]=1048576 [64MiB]=67108864)

# The verdict's thresholds (see perf/README.md, "Soak test").
readonly FD_MARGIN=16                 # descriptors after drain may exceed the baseline by this much
# The thread pool adds workers under load and retires each after 20 s idle, so after the drain the end
# row waits (at most THREAD_SETTLE_TIMEOUT_S) for the count to come back within THREAD_MARGIN of the
# baseline. A worker blocked for good, or a thread per connection or per abort, never comes back.
readonly THREAD_MARGIN=4              # threads at the end may exceed the baseline by this much
readonly THREAD_SETTLE_TIMEOUT_S=30   # the pool's 20 s idle timeout plus room
readonly RSS_GROWTH_LIMIT_MIB=20      # mean RSS of the second half of the minutes over the first half
# RSS should follow what the server holds, not when its GC last ran: workstation GC (the Web SDK's default
# server GC lets gen0 grow to 200 MiB here) with a 1 MiB gen0 budget, so garbage never piles up for long.
readonly GC_ENV=(DOTNET_gcServer=0 DOTNET_GCgen0size=0x100000)

MINUTES=$DEFAULT_MINUTES
PORT=$DEFAULT_PORT
TMP_DIR=""
SERVER_PID=""
SERVER_LOG=""
SERVER_EXIT=""                        # set to how the server ended, if it did
KEPT_LOG=""
SUMMARY_PRINTED=0
LOAD_PIDS=()
declare -a ROWS=()                    # one table row per sample
FAIL_REASONS=()

# Its own die: a failed soak also prints the one-line verdict.
die() { printf '\nperf/soak.sh: ERROR: %s\n' "$*" >&2; echo "soak: FAIL ($*)"; SUMMARY_PRINTED=1; exit 1; }

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

parse_args() {
  while (($#)); do
    case "$1" in
      --minutes) MINUTES=${2:?--minutes needs a number}; shift ;;
      --port) PORT=${2:?--port needs a number}; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
  [[ $MINUTES =~ ^[1-9][0-9]*$ ]] || die "--minutes must be a whole number >= 1, not '$MINUTES'"
  [[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "--port must be a TCP port, not '$PORT'"
}

# ---------------------------------------------------------------------------------------------- set-up


# ---------------------------------------------------------------------------------------------- server

server_alive() { kill -0 "$SERVER_PID" 2>/dev/null; }

start_server() {
  ss -Hltn "( sport = :$PORT )" | grep -q . && die "port $PORT is already in use (choose another with --port)"
  SERVER_LOG=$TMP_DIR/server.log
  BASE_URL=http://127.0.0.1:$PORT
  SERVER_COMMAND=(env "${GC_ENV[@]}" taskset -c "$SERVER_CORE" "$SAMPLE_BIN" --transport splice
                  --root "$FILES_DIR" --urls "$BASE_URL")
  log "starting: ${SERVER_COMMAND[*]}"
  # env and taskset exec the next program, so $! is the server's own PID. The sample logs at Warning and
  # above to the console: its log holds every warning and error ("warn:", "fail:", "crit:").
  "${SERVER_COMMAND[@]}" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local deadline=$((EPOCHSECONDS + STARTUP_TIMEOUT_S))
  until curl -s -o /dev/null --max-time 1 "$BASE_URL/plaintext"; do
    server_alive || { cat "$SERVER_LOG" >&2; die "the server exited while starting"; }
    ((EPOCHSECONDS < deadline)) || die "the server did not answer on port $PORT within ${STARTUP_TIMEOUT_S}s"
    sleep 0.2
  done
}

# /plaintext's exact body, and every file with status 200 and its exact size.
check_server() {
  local body name got expected
  body=$(curl -s --max-time 10 "$BASE_URL/plaintext") || die "GET /plaintext failed"
  [[ $body == "$PLAINTEXT_BODY" ]] || die "GET /plaintext returned '$body', not '$PLAINTEXT_BODY'"
  for name in "${FILE_NAMES[@]}"; do
    expected="200 ${FILE_SIZE[$name]}"
    got=$(curl -s -o /dev/null --max-time 30 -w '%{http_code} %{size_download}' "$BASE_URL/$name.bin") || true
    [[ $got == "$expected" ]] || die "GET /$name.bin gave 'status bytes' = '$got', expected '$expected'"
  done
}


# ------------------------------------------------------------------------------------------- the load
# Each loop runs in a background subshell until its deadline and appends one line per client run to its
# own file in the results folder it is given. Its client runs in the background and the loop waits for it:
# bash runs a trap only between commands, but `wait` returns at once, so TERM stops loop and client together.
# INT too: Ctrl-C reaches every process of the group, and a loop killed by it would leave its client behind.

run_client() {
  taskset -c "$CLIENT_CORE" "$@" &
  CLIENT_PID=$!
  wait "$CLIENT_PID"
}

# The loops' TERM and INT trap: stops the client and reaps it (so nothing is left behind), then the loop.
stop_client() {
  if [[ -n ${CLIENT_PID:-} ]]; then
    kill -TERM "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
  fi
  exit 0
}

# wrk_loop <results dir> <name> <deadline> <connections> <path> <pipeline depth>
# Appends each run's WRK_RESULT line (perf/report.lua), or "WRK_FAILED" with wrk's output kept aside.
wrk_loop() {
  local dir=$1 name=$2 deadline=$3 conns=$4 path=$5 depth=$6 run remaining status
  local out=$dir/$name.out
  trap stop_client TERM INT
  for ((run = 0; run < MAX_ITERATIONS; run++)); do
    remaining=$((deadline - EPOCHSECONDS))
    ((remaining >= WRK_MIN_RUN_S)) || break
    local args=(wrk -t1 -c"$conns" -d"$((remaining < WRK_RUN_S ? remaining : WRK_RUN_S))s" --timeout "$WRK_TIMEOUT")
    if ((depth > 1)); then
      args+=(-s "$PERF_DIR/pipeline.lua" "$BASE_URL$path" -- "$depth")
    else
      args+=(-s "$PERF_DIR/report.lua" "$BASE_URL$path")
    fi
    run_client "${args[@]}" >"$out" 2>&1 && status=0 || status=$?
    if ((status == 0)) && grep -q '^WRK_RESULT ' "$out"; then
      grep '^WRK_RESULT ' "$out" >>"$dir/$name.log"
    else
      echo "WRK_FAILED name=$name exit=$status" >>"$dir/$name.log"
      { echo "--- $name: ${args[*]} (exit $status)"; cat "$out"; } >>"$dir/failures.txt"
      sleep "$RETRY_PAUSE_S"
    fi
  done
}

# abort_loop <results dir> <name> <deadline>: "ABORT exit=<curl exit> http=<status> bytes=<received>".
# curl's exit 28 is the intended abort (its --max-time); 0 would be a download that finished anyway.
abort_loop() {
  local dir=$1 name=$2 deadline=$3 i status
  trap stop_client TERM INT
  for ((i = 0; i < MAX_ITERATIONS && EPOCHSECONDS < deadline; i++)); do
    local range=()
    ((i % 2)) && range=(--range "$ABORT_RANGE_START-")
    run_client curl -s -o /dev/null --limit-rate "$ABORT_RATE" --max-time "${ABORT_AFTER_S[i % ${#ABORT_AFTER_S[@]}]}" \
      "${range[@]}" -w '%{http_code} %{size_download}' "$BASE_URL/64MiB.bin" >"$dir/$name.out" 2>/dev/null \
      && status=0 || status=$?
    read -r http bytes <"$dir/$name.out" || true
    echo "ABORT exit=$status http=${http:-000} bytes=${bytes:-0}" >>"$dir/$name.log"
    ((status == 0 || status == CURL_TIMED_OUT)) || sleep "$RETRY_PAUSE_S"
  done
}

# slow_loop <results dir> <name> <deadline>: "SLOW exit=<curl exit> http=<status> bytes=<received>".
slow_loop() {
  local dir=$1 name=$2 deadline=$3 i status
  trap stop_client TERM INT
  for ((i = 0; i < MAX_ITERATIONS && EPOCHSECONDS + SLOW_EXPECTED_S + SLOW_SLACK_S <= deadline; i++)); do
    run_client curl -s -o /dev/null --limit-rate "$SLOW_RATE" --max-time "$SLOW_MAX_TIME_S" \
      -w '%{http_code} %{size_download}' "$BASE_URL/64MiB.bin" >"$dir/$name.out" 2>/dev/null \
      && status=0 || status=$?
    read -r http bytes <"$dir/$name.out" || true
    echo "SLOW exit=$status http=${http:-000} bytes=${bytes:-0}" >>"$dir/$name.log"
    ((status == 0)) || sleep "$RETRY_PAUSE_S"
  done
}

# start_load <results dir> <seconds>: every loop, in the background, until now + seconds.
start_load() {
  local dir=$1 deadline=$((EPOCHSECONDS + $2)) i
  mkdir -p "$dir"
  LOAD_DEADLINE=$deadline
  wrk_loop "$dir" plaintext "$deadline" "$PLAINTEXT_CONNECTIONS" /plaintext 1 & LOAD_PIDS+=($!)
  wrk_loop "$dir" pipelined "$deadline" "$PIPELINE_CONNECTIONS" /plaintext "$PIPELINE_DEPTH" & LOAD_PIDS+=($!)
  wrk_loop "$dir" file-4KiB "$deadline" "$SMALL_FILE_CONNECTIONS" /4KiB.bin 1 & LOAD_PIDS+=($!)
  wrk_loop "$dir" file-1MiB "$deadline" "$MEDIUM_FILE_CONNECTIONS" /1MiB.bin 1 & LOAD_PIDS+=($!)
  for ((i = 0; i < ABORT_LOOPS; i++)); do abort_loop "$dir" "abort-$i" "$deadline" & LOAD_PIDS+=($!); done
  for ((i = 0; i < SLOW_READERS; i++)); do slow_loop "$dir" "slow-$i" "$deadline" & LOAD_PIDS+=($!); done
}

stop_load() {
  local pid
  for pid in "${LOAD_PIDS[@]}"; do stop_pid "$pid"; done
  LOAD_PIDS=()
}

# Waits for the loops to end by themselves (a last slow download may run up to SLOW_MAX_TIME_S past the
# deadline); stops any still running after that.
finish_load() {
  local limit=$((LOAD_DEADLINE + SLOW_MAX_TIME_S + STOP_TIMEOUT_S)) pid
  for pid in "${LOAD_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((EPOCHSECONDS < limit)); do sleep 0.2; done
    stop_pid "$pid"
  done
  LOAD_PIDS=()
}

# Server-side sockets of the port that still hold a descriptor (TIME-WAIT holds none; LISTEN is expected).
open_server_sockets() {
  ss -Htan "( sport = :$PORT )" | awk '$1 != "LISTEN" && $1 != "TIME-WAIT"' | wc -l
}

# Waits until the server has closed every connection, at most DRAIN_TIMEOUT_S, then SETTLE_S more.
drain() {
  local deadline=$((EPOCHSECONDS + DRAIN_TIMEOUT_S))
  while (($(open_server_sockets) > 0)) && ((EPOCHSECONDS < deadline)); do sleep 0.2; done
  sleep "$SETTLE_S"
}

# Waits, at most THREAD_SETTLE_TIMEOUT_S, until the thread pool has retired the workers the load added.
settle_threads() {
  local limit=$(($(field "${ROWS[0]}" 3) + THREAD_MARGIN)) deadline=$((EPOCHSECONDS + THREAD_SETTLE_TIMEOUT_S))
  local threads
  threads=$(proc_status "$SERVER_PID" Threads 2>/dev/null) || return 0   # exited: the end row will say
  ((threads > limit)) || return 0
  log "$threads threads; waiting up to ${THREAD_SETTLE_TIMEOUT_S}s for the thread pool to retire idle workers"
  while ((EPOCHSECONDS < deadline)); do
    sleep 1
    threads=$(proc_status "$SERVER_PID" Threads 2>/dev/null) || return 0
    ((threads > limit)) || return 0
  done
}

# ------------------------------------------------------------------------------------------ measuring

proc_status() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }

# Sums the results folders: "requests client_errors aborted abort_other".
#   requests: wrk's completed responses plus every curl download started;
#   client_errors: wrk socket errors and non-2xx/3xx statuses, failed wrk runs, failed slow downloads;
#   aborted / abort_other: aborted downloads that ended as intended (curl exit 28 or a completed
#   download) / any other way (not errors: a client that walks away may see anything).
tally() {
  { cat "$@" 2>/dev/null || true; } | awk -v slow_bytes="${FILE_SIZE[64MiB]}" -v timed_out="$CURL_TIMED_OUT" '
    { delete f; for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
    $1 == "WRK_RESULT" { requests += f["requests"]; errors += f["connect"] + f["read"] + f["write"] + f["status"] + f["timeout"] }
    $1 == "WRK_FAILED" { errors++ }
    $1 == "ABORT" { requests++; if (f["exit"] == timed_out || f["exit"] == 0) aborted++; else other++ }
    $1 == "SLOW" { requests++; if (f["exit"] != 0 || f["http"] != 200 || f["bytes"] != slow_bytes) errors++ }
    END { printf "%d %d %d %d\n", requests, errors, aborted, other }'
}

# One line per kind of client: what each did over the soak, so a load that silently did nothing shows.
load_breakdown() {
  local dir=$1 kind files
  for kind in plaintext pipelined file-4KiB file-1MiB abort slow; do
    files=("$dir/$kind"*.log)
    [[ -e ${files[0]} ]] || { echo "$kind: no runs"; continue; }
    read -r requests errors aborted other <<<"$(tally "${files[@]}")"
    case "$kind" in
      abort) echo "$kind: $requests downloads, $aborted aborted as intended, $other ended otherwise" ;;
      slow) echo "$kind: $requests downloads, $errors failed" ;;
      *) echo "$kind: $requests requests, $errors errors" ;;
    esac
  done | paste -sd ';' | sed 's/;/; /g'
}

log_count() { grep -c "^$1: " "$SERVER_LOG" || true; }

# sample <label> <results dir>: one table row from the server's /proc entry, the results so far and its log.
#   fields: label elapsed_s fds threads rss_kib requests client_errors log_fail log_crit log_warn aborted abort_other
sample() {
  local label=$1 dir=$2 fds threads rss
  if server_alive; then
    fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    threads=$(proc_status "$SERVER_PID" Threads)
    rss=$(proc_status "$SERVER_PID" VmRSS)
  else
    fds=- threads=- rss=-
  fi
  local tallied; tallied=$(tally "$dir"/*.log)
  local requests errors aborted other
  read -r requests errors aborted other <<<"$tallied"
  ROWS+=("$label $((EPOCHSECONDS - SOAK_STARTED)) $fds $threads $rss $requests $errors $(log_count fail) $(log_count crit) $(log_count warn) $aborted $other")
}

# Sleeps until <epoch seconds>, checking every second that the server still runs; false if it exited.
sleep_until() {
  while ((EPOCHSECONDS < $1)); do
    server_alive || return 1
    sleep 1
  done
  server_alive
}

# ------------------------------------------------------------------------------------------- reporting

TABLE_HEADER="| sample | s | fds | threads | RSS MiB | requests | client errors | log fail | log crit | log warn | aborted downloads (other endings) |"

print_table() {
  echo "$TABLE_HEADER"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  local row label elapsed fds threads rss requests errors fail crit warn aborted other rss_mib
  for row in "${ROWS[@]}"; do
    read -r label elapsed fds threads rss requests errors fail crit warn aborted other <<<"$row"
    [[ $rss == - ]] && rss_mib=- || rss_mib=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')
    echo "| $label | $elapsed | $fds | $threads | $rss_mib | $requests | $errors | $fail | $crit | $warn | $aborted ($other) |"
  done
}

field() { local -a f; read -ra f <<<"$1"; echo "${f[$2]}"; }   # field <row> <index>

# Decides PASS or FAIL from ROWS: the first row is the baseline, the last the drained end, the ones
# between are the minutes of load.
judge() {
  local base=${ROWS[0]} end=${ROWS[-1]} minutes=("${ROWS[@]:1:${#ROWS[@]}-2}")
  local errors fail crit
  errors=$(field "$end" 6) fail=$(field "$end" 7) crit=$(field "$end" 8)
  ((errors == 0)) || FAIL_REASONS+=("$errors client errors")
  ((fail + crit == 0)) || FAIL_REASONS+=("$((fail + crit)) server log errors (fail/crit)")
  [[ -n $SERVER_EXIT ]] && FAIL_REASONS+=("the server exited: $SERVER_EXIT")
  TOTAL_ERRORS=$((errors + fail + crit + (${#SERVER_EXIT} > 0 ? 1 : 0)))

  FDS="$(field "$base" 2)->$(field "$end" 2)"
  THREADS="$(field "$base" 3)->$(field "$end" 3)"
  [[ -z $SERVER_EXIT ]] || { FDS="$(field "$base" 2)->exited"; THREADS="$(field "$base" 3)->exited"; }
  if [[ -z $SERVER_EXIT ]]; then
    local fd_growth=$(($(field "$end" 2) - $(field "$base" 2)))
    local thread_growth=$(($(field "$end" 3) - $(field "$base" 3)))
    ((fd_growth <= FD_MARGIN)) || FAIL_REASONS+=("fds grew by $fd_growth (limit $FD_MARGIN; $(open_server_sockets) server sockets still open)")
    ((thread_growth <= THREAD_MARGIN)) || FAIL_REASONS+=("threads grew by $thread_growth (limit $THREAD_MARGIN)")
  fi

  # RSS: mean of the second half of the load minutes against the mean of the first half.
  local n=${#minutes[@]} half first second
  if ((n >= 2)) && [[ -z $SERVER_EXIT ]]; then
    half=$((n / 2))
    first=$(printf '%s\n' "${minutes[@]:0:half}" | awk '{s += $5} END {printf "%.1f", s / NR / 1024}')
    second=$(printf '%s\n' "${minutes[@]:n-half}" | awk '{s += $5} END {printf "%.1f", s / NR / 1024}')
    RSS="$first->$second MiB"
    awk -v a="$first" -v b="$second" -v limit="$RSS_GROWTH_LIMIT_MIB" 'BEGIN {exit !(b - a > limit)}' \
      && FAIL_REASONS+=("RSS grew by $(awk -v a="$first" -v b="$second" 'BEGIN {printf "%.1f", b - a}') MiB from the first half of the minutes to the second (limit $RSS_GROWTH_LIMIT_MIB)")
  elif [[ -n $SERVER_EXIT ]]; then
    RSS="$(awk -v k="$(field "$base" 4)" 'BEGIN {printf "%.0f", k / 1024}')->exited"
  else
    RSS="$(awk -v k="$(field "$base" 4)" 'BEGIN {printf "%.0f", k / 1024}')->$(awk -v k="$(field "$end" 4)" 'BEGIN {printf "%.0f", k / 1024}') MiB (not judged: fewer than 2 minutes)"
  fi
  SOAK_REQUESTS=$(field "$end" 5)
}

summary_line() {
  local verdict=PASS reasons=""
  if ((${#FAIL_REASONS[@]})); then
    verdict=FAIL
    reasons=" ($(printf '%s; ' "${FAIL_REASONS[@]}" | sed 's/; $//'))"
  fi
  echo "soak: $verdict$reasons $MINUTES min, $SOAK_REQUESTS requests, $TOTAL_ERRORS errors, fds $FDS, threads $THREADS, rss $RSS"
}

write_result_file() {
  local summary=$1
  mkdir -p "$(dirname "$RESULT_FILE")"
  {
    echo "# Soak test: $MINUTES minutes of mixed load on SpliceTransport"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILD_COMMIT (\`src/\` as of $SRC_COMMIT); kernel $(uname -sr); .NET SDK $(dotnet --version)"
    echo "- Command: \`perf/soak.sh --minutes $MINUTES\`; server: \`${SERVER_COMMAND[*]/$TMP_DIR/<tmp>}\`"
    echo "- Load, at once, clients on core $CLIENT_CORE: wrk /plaintext ($PLAINTEXT_CONNECTIONS conns), pipelined /plaintext" \
         "(${PIPELINE_CONNECTIONS} conns × $PIPELINE_DEPTH), 4 KiB file ($SMALL_FILE_CONNECTIONS conns), 1 MiB file ($MEDIUM_FILE_CONNECTIONS conns)," \
         "in ${WRK_RUN_S} s runs; $ABORT_LOOPS loops aborting 64 MiB downloads after ${ABORT_AFTER_S[*]} s;" \
         "$SLOW_READERS slow readers of the 64 MiB file at $SLOW_RATE/s. Warm-up ${WARMUP_S} s of the same load."
    echo "- Thresholds: fds after drain ≤ baseline + $FD_MARGIN; threads ≤ baseline + $THREAD_MARGIN;" \
         "mean RSS of the second half of the minutes ≤ first half + $RSS_GROWTH_LIMIT_MIB MiB; no error of any kind."
    echo
    echo "Rows: \`start\` after warm-up and drain (the baseline), one per minute of load, \`end\` after the load" \
         "stopped and connections drained. Requests and errors are cumulative over the soak (the start row: warm-up);" \
         "wrk's counts arrive when each ${WRK_RUN_S} s run ends."
    echo
    print_table
    echo
    echo "Clients over the soak: $(load_breakdown "$TMP_DIR/soak")."
    echo
    echo "\`$summary\`"
  } >"$RESULT_FILE"
}

# Prints what the failures were: server log errors and warnings, failed wrk runs, failed slow downloads.
# (Each `head` may close its pipe early: `|| true` keeps that from ending the script under pipefail.)
show_evidence() {
  if grep -qE '^(fail|crit): ' "$SERVER_LOG" 2>/dev/null; then
    echo "First server log errors (whole log in $KEPT_LOG):"
    grep -E -A4 '^(fail|crit): ' "$SERVER_LOG" | head -n "$EVIDENCE_LINES" || true
  fi
  if grep -q '^warn: ' "$SERVER_LOG" 2>/dev/null; then
    echo "Server warnings, by kind:"
    grep -A1 '^warn: ' "$SERVER_LOG" | grep -v '^--$' | paste - - | sort | uniq -c | sort -rn | head -n "$EVIDENCE_LINES" || true
  fi
  if [[ -s $TMP_DIR/soak/failures.txt || -s $TMP_DIR/warmup/failures.txt ]]; then
    echo "Failed wrk runs:"
    cat "$TMP_DIR"/{warmup,soak}/failures.txt 2>/dev/null | head -n "$EVIDENCE_LINES" || true
  fi
  local failed_slow
  failed_slow=$(cat "$TMP_DIR"/{warmup,soak}/slow-*.log 2>/dev/null | grep -v "exit=0 http=200 bytes=${FILE_SIZE[64MiB]}$" | head -n "$EVIDENCE_LINES" || true)
  [[ -z $failed_slow ]] || { echo "Failed slow downloads:"; echo "$failed_slow"; }
}

keep_server_log() {
  [[ -n $SERVER_LOG && -f $SERVER_LOG ]] || return 0
  mkdir -p "$LOG_DIR"
  KEPT_LOG=$LOG_DIR/soak-$(date +%Y%m%d-%H%M%S).log
  cp "$SERVER_LOG" "$KEPT_LOG"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # The last line is always a summary, even when the script stops early (Ctrl-C, a failed step).
  ((SUMMARY_PRINTED)) || echo "soak: FAIL (stopped early, exit status $status; see the messages above)"
  stop_load
  [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
  [[ -n $TMP_DIR ]] && rm -rf "$TMP_DIR"
  exit "$status"
}

# Records how the server ended (it has exited): "exit status N", and when.
note_server_exit() {
  local status=0
  wait "$SERVER_PID" || status=$?
  SERVER_EXIT="exit status $status, $1"
  log "the server exited $1 (exit status $status)"
}

# The same load for WARMUP_S, then drain; the start row (the baseline) comes after it.
warm_up() {
  SOAK_STARTED=$EPOCHSECONDS
  start_load "$TMP_DIR/warmup" "$WARMUP_S"
  finish_load
  if server_alive; then drain; else note_server_exit "during warm-up"; fi
  sample start "$TMP_DIR/warmup"    # the warm-up's counts; the minutes count the soak's own
}

# MINUTES of load with a row each minute, then (unless the server exited) drain and the end row.
run_minutes() {
  log "soak: $MINUTES min of load; a sample every ${SAMPLE_INTERVAL_S}s"
  local minute load_started=$EPOCHSECONDS
  SOAK_STARTED=$load_started
  start_load "$TMP_DIR/soak" $((MINUTES * SAMPLE_INTERVAL_S))
  for ((minute = 1; minute <= MINUTES; minute++)); do
    if ! sleep_until $((load_started + minute * SAMPLE_INTERVAL_S)); then
      note_server_exit "during minute $minute"
      break
    fi
    sample "min-$minute" "$TMP_DIR/soak"
    log "minute $minute: $(field "${ROWS[-1]}" 6) client errors, $(($(field "${ROWS[-1]}" 7) + $(field "${ROWS[-1]}" 8))) log errors so far"
  done
  if [[ -n $SERVER_EXIT ]]; then
    stop_load
  else
    log "load ends; waiting for the clients, then for connections to drain"
    finish_load
    if server_alive; then drain; settle_threads; else note_server_exit "as the load ended"; fi
  fi
  sample end "$TMP_DIR/soak"
}

main() {
  parse_args "$@"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  TMP_DIR=$(mktemp -d /tmp/splice-soak.XXXXXX)

  install_packages_for wrk=wrk curl=curl taskset=util-linux ss=iproute2
  ulimit -n "$(ulimit -Hn)"   # wrk and the server together hold a few hundred sockets; raise anyway
  mkdir -p "$CACHE_DIR"
  build_sample
  make_files
  start_server
  check_server
  log "server pid $SERVER_PID answers correctly; warming up for ${WARMUP_S}s"

  warm_up
  if [[ -z $SERVER_EXIT ]]; then
    run_minutes
  else
    sample end "$TMP_DIR/soak"      # no soak: an end row of nothing, so the table has its usual ends
  fi

  # Warm-up errors count too: they are errors all the same.
  local warmup_errors; warmup_errors=$(tally "$TMP_DIR"/warmup/*.log | awk '{print $2}')
  ((warmup_errors == 0)) || FAIL_REASONS+=("$warmup_errors client errors during warm-up")
  keep_server_log
  judge
  TOTAL_ERRORS=$((TOTAL_ERRORS + warmup_errors))
  local summary; summary=$(summary_line)
  write_result_file "$summary"
  print_table
  echo
  echo "clients over the soak: $(load_breakdown "$TMP_DIR/soak")"
  show_evidence
  echo "(server log: $KEPT_LOG; table also in perf/results/soak.md)"
  echo "$summary"
  SUMMARY_PRINTED=1
  ((${#FAIL_REASONS[@]} == 0))
}

main "$@"
