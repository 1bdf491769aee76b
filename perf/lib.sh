# perf/lib.sh — shell helpers shared by the perf scripts (sourced, not run, after setting PERF_DIR). The helpers read
# the sourcing script's globals of the same names where they need them: PORT[server], FILES and FILE_SIZE[name],
# FD_LIMIT, CSV, DURATION_S, WRK_TIMEOUT, WARMUP_CSV, WAIT_QUIET_S; URL_SCHEME is http unless a script sets https.

# Settings every script shares; a script overrides one by assigning it after sourcing this file.
REPO_DIR=$(dirname "$PERF_DIR")
CACHE_DIR=$PERF_DIR/.cache              # git-ignored: test files, builds, Go caches, kept logs
FILES_DIR=$CACHE_DIR/files              # the random test files, shared by the scripts
BIN_DIR=$CACHE_DIR/bin                  # the Go programs
LOG_DIR=$CACHE_DIR/logs                 # the whole log of a server that failed
RESULTS_DIR=$PERF_DIR/results
SAMPLE_PROJECT=$REPO_DIR/samples/StaticFileServer
SAMPLE_BUILD_DIR=$SAMPLE_PROJECT/bin/Release/net10.0
# Each script runs the sample from its own copy of the build: a rebuild of bin/Release, or another script's
# build, must not change the assemblies of a server being measured.
SAMPLE_COPY_DIR=$CACHE_DIR/$(basename "$0" .sh)-sample
SAMPLE_BIN=$SAMPLE_COPY_DIR/StaticFileServer
SERVER_CORE=0                           # every server alone on core 0, so each gets the same single core...
CLIENT_CORE=1                           # ...and every client on the other (the machine has two)
STARTUP_TIMEOUT_S=30                    # a server not answering by then has failed to start
STOP_TIMEOUT_S=5                        # after TERM, a process gets this long before KILL
PLAINTEXT_BODY="Hello, World!"          # what the sample's, nginx's and Go's /plaintext return
declare -A SERVER_PID=()                # the servers a script started, by name (cleanup stops them)
CLIENT_PID="" PROBE_PID=""              # the client and the probe (strace, perf) running, if any (cleanup stops them)
# warm_up's rule (warmup_rule) and its windows: the rate alone is fooled, since on one core .NET holds a plateau at
# half speed until tier-1 promotion 36-52 s in (results/warmup-knobs.md).
WARMUP_STABLE_WINDOWS=3 WARMUP_RISE_PCT=3 WARMUP_JIT_GROWTH_PCT=1 WARMUP_DOTNET_MIN_S=60
WARMUP_CONNECTIONS=32 WARMUP_WINDOW_S=2 WARMUP_CAP_S=90
readonly WARMUP_CSV_HEADER="server,window,elapsed_s,requests_per_s,steady,jit_compiled_methods"

# begin_run NAME: how every script's main starts: its clock (STARTED), cleanup() on exit, a signal's usual exit
# code, and a private temporary directory (TMP_DIR), in which COMMANDS_FILE collects the run's exact commands.
begin_run() {
  STARTED=$SECONDS
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  TMP_DIR=$(mktemp -d "/tmp/splice-$1.XXXXXX")
  COMMANDS_FILE=$TMP_DIR/commands.txt
  : >"$COMMANDS_FILE"
}

# The exit trap: stops what the script started (a probe with INT, so it writes its summary; the client; every
# server), runs the script's cleanup_more if it has one, removes TMP_DIR, and keeps the exit status.
cleanup() {
  local status=$? name
  trap - EXIT INT TERM
  [[ -z ${PROBE_PID:-} ]] || stop_probe
  stop_pid "${CLIENT_PID:-}"
  for name in "${!SERVER_PID[@]}"; do stop_pid "${SERVER_PID[$name]}"; done
  if declare -F cleanup_more >/dev/null; then cleanup_more; fi
  [[ -z ${TMP_DIR:-} ]] || rm -rf "$TMP_DIR"
  exit "$status"
}

# The usage lines of the script's header (those starting "#   perf/"), on stderr; exits with $1 (default 2).
usage() { grep '^#   perf/' "$0" | sed 's/^#   /usage: /' >&2; exit "${1:-2}"; }

# positive_integer echoes the value $2 of option $1 if it is a whole number of at least 1, and dies naming both
# otherwise. parse_options: the options a script takes of --rounds N and --duration S; anything else: usage.
#   parse_options "--rounds --duration" "$@"
positive_integer() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a whole number of at least 1, not '$2'"; echo "$2"; }
parse_options() {
  local allowed=" $1 "
  shift
  while (($#)); do
    [[ $allowed == *" $1 "* && $# -ge 2 ]] || usage
    case "$1" in
      --rounds) ROUNDS=$(positive_integer --rounds "$2") ;;
      --duration) DURATION_S=$(positive_integer --duration "$2") ;;
    esac
    shift 2
  done
}

# A timestamped progress line, and a fatal error naming the script, on stderr (what every perf script prints).
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { DIED=$*; printf '\nperf/%s: ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }   # DIED: for a cleanup_more

# TERM (or the signal given, e.g. INT for a probe that must write its summary), then KILL after STOP_TIMEOUT_S;
# only ever a PID the calling script started. One that has already exited is reaped, so no zombie is left.
#   stop_pid PID [SIGNAL]
stop_pid() {
  local pid=$1 deadline=$((EPOCHSECONDS + STOP_TIMEOUT_S))
  [[ -n $pid ]] || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((EPOCHSECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# stop_pid for every PID in the array named <array>, which is then emptied (a script's background clients).
stop_pids() {
  local -n to_stop=$1
  local pid
  for pid in "${to_stop[@]}"; do stop_pid "$pid"; done
  to_stop=()
}

# Installs the Debian package of each tool that is not on PATH, all in one apt-get call.
#   install_packages_for wrk=wrk perf=linux-perf ...   (tool=package)
install_packages_for() {
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}"); done
  ((${#missing[@]} == 0)) && return
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
}

# The base URL of a server, e.g. http://127.0.0.1:18081. Every curl of a server passes -k: an https server has a
# self-signed certificate.
server_url() { echo "${URL_SCHEME:-http}://127.0.0.1:${PORT[$1]}"; }

# The sample's servers (every variant's name starts with its transport); the others are nginx and go.
is_dotnet_server() { [[ $1 == splice* || $1 == sockets* ]]; }

# The command line of the sample on one transport, pinned to SERVER_CORE, workstation GC, with the perf
# endpoints (/perf/gc, /perf/jit, /perf/threadpool: routes the load never requests).
#   dotnet_server_command <splice|sockets> <port> [extra environment, "A=1 B=2"] [extra sample arguments]
dotnet_server_command() {
  local transport=$1 port=$2 extra_env=${3:-} extra_args=${4:-}
  echo "env DOTNET_gcServer=0${extra_env:+ $extra_env} taskset -c $SERVER_CORE $SAMPLE_BIN --root $FILES_DIR" \
       "--urls ${URL_SCHEME:-http}://127.0.0.1:$port --transport $transport --perf-endpoints true${extra_args:+ $extra_args}"
}

# Writes <dir>/nginx.conf (one worker, sendfile on, tcp_nopush on, access_log off, serving FILES_DIR) and prints
# nginx's command line, pinned to SERVER_CORE, in the foreground.
#   nginx_server_command <dir> <port> <worker_connections> [more http directives, e.g. "aio threads;"]
nginx_server_command() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<EOF
# Generated by perf/lib.sh for ${0##*/}.
user root;                          # the files live under the repository, which the default user may not read
worker_processes 1;                 # one worker: the same single core as every other server
worker_rlimit_nofile $FD_LIMIT;
pid $1/nginx.pid;
error_log $1/error.log warn;
events {
    worker_connections $3;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    ${4:-}
    keepalive_requests 1000000000;  # the default 1000 would make wrk reconnect; the other servers never ask it to
    keepalive_timeout 130s;         # Kestrel's default
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$2;
        root $FILES_DIR;
        location = /plaintext { default_type text/plain; return 200 "$PLAINTEXT_BODY"; }
    }
}
EOF
  echo "taskset -c $SERVER_CORE nginx -p $1 -c $1/nginx.conf -e $1/error.log -g 'daemon off;'"
}

# Starts <command> (a string, run with exec so that $! is the server itself) in the background as server <name>,
# logging to TMP_DIR/<name>.log, once its port is free (another perf script, e.g. in another worktree, may be
# using it: measuring or stopping someone else's server would be nonsense); records the command once. The perf
# lock's descriptor is not inherited: a server left behind must not hold the lock.
#   start_server_process <name> <command> [label in the commands file, default the name]
start_server_process() {
  local name=$1 cmd=$2 label=${3:-$1} owner
  owner=$(ss -Hltnp "sport = :${PORT[$name]}" 2>/dev/null | sed -n 's/.*users:((\(.*\))).*/\1/p' | head -n1)
  [[ -z $owner ]] || die "port ${PORT[$name]} (for '$name') is already in use by $owner; is another perf/${0##*/} running?"
  grep -qxF "server $label: $cmd" "$COMMANDS_FILE" 2>/dev/null || echo "server $label: $cmd" >>"$COMMANDS_FILE"
  ( [[ -n ${LOCK_FD:-} ]] && exec {LOCK_FD}>&-; eval "exec $cmd" ) >"$TMP_DIR/$name.log" 2>&1 &
  SERVER_PID[$name]=$!
}

# Raises the open-file limit to $1 (or the hard limit, if lower) and sets FD_LIMIT to what it is (nginx's config).
raise_fd_limit() { ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; FD_LIMIT=$(ulimit -n); }

# Waits for /work/perf.lock, held until the script exits: two scripts never measure at once.
take_perf_lock() {
  log "waiting for /work/perf.lock (other perf runs finish measuring first)"
  exec {LOCK_FD}>>/work/perf.lock
  flock "$LOCK_FD"
}

# Builds perf/gopeer (the Go peers: $BIN_DIR/gopeer server|idle|upload|proxy) with the Debian toolchain.
build_gopeer() {
  log "building perf/gopeer"
  mkdir -p "$BIN_DIR"
  (cd "$PERF_DIR/gopeer" && GOCACHE=$CACHE_DIR/go-build GOPATH=$CACHE_DIR/gopath GOTOOLCHAIN=local GOFLAGS= \
      go build -o "$BIN_DIR/gopeer" .) || die "go build of perf/gopeer failed"
}

# The lines every NAME-meta.txt starts with; the script adds its own. Reads ARGS, STARTED, QUIET, LOADAVG_START and,
# after build_sample, BUILD_COMMIT and SRC_COMMIT.
common_metadata() {
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
  echo "cores=$(nproc --all)"
  echo "kernel=$(uname -sr)"
  echo "dotnet=$(dotnet --version)"
  echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
  echo "quiet_at_start=$QUIET"
  echo "loadavg_start=$LOADAVG_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "run_seconds=$((SECONDS - STARTED))"
  echo "command=perf/${0##*/}${ARGS:+ $ARGS}"
  [[ -z ${BUILD_COMMIT:-} ]] || printf '%s\n' "commit=$BUILD_COMMIT" "src_commit=$SRC_COMMIT"
}

# HEAD, and whether src/ or samples/ had uncommitted changes when the sample was built.
describe_commit() {
  local head; head=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return; }
  [[ -z $(git -C "$REPO_DIR" status --porcelain -- src samples 2>/dev/null) ]] \
    && echo "$head" || echo "$head (plus uncommitted changes in src/ or samples/)"
}

build_sample() {
  log "building the sample (Release)"
  BUILD_COMMIT=$(describe_commit)   # taken now: others may commit while the benchmark runs
  SRC_COMMIT=$(git -C "$REPO_DIR" log -1 --format=%h -- src 2>/dev/null || echo unknown)   # last commit that changed src/
  dotnet build -c Release "$SAMPLE_PROJECT" -nologo -v q >"$TMP_DIR/dotnet-build.log" 2>&1 \
    || { tail -n 30 "$TMP_DIR/dotnet-build.log" >&2; die "dotnet build of ${SAMPLE_PROJECT#"$REPO_DIR"/} failed"; }
  rm -rf "$SAMPLE_COPY_DIR"
  mkdir -p "$CACHE_DIR"
  cp -a "$SAMPLE_BUILD_DIR" "$SAMPLE_COPY_DIR"
  [[ -x $SAMPLE_BIN ]] || die "built, but $SAMPLE_BIN is missing"
}

# FILES of random bytes (nothing compresses or deduplicates on the way), made once and cached in FILES_DIR.
make_files() {
  local name path
  mkdir -p "$FILES_DIR"
  for name in "${FILES[@]}"; do
    path=$FILES_DIR/$name.bin
    [[ -f $path && $(stat -c %s "$path") == "${FILE_SIZE[$name]}" ]] && continue
    log "generating $name of random bytes (once; cached in ${FILES_DIR#"$REPO_DIR"/})"
    head -c "${FILE_SIZE[$name]}" /dev/urandom >"$path.tmp" && mv "$path.tmp" "$path"
  done
}

# Prints the end of a server's log and keeps the whole log in LOG_DIR; echoes the kept file's path.
keep_server_log() {
  local kept=$LOG_DIR/$1-$(date +%Y%m%d-%H%M%S).log
  mkdir -p "$LOG_DIR"
  cp "$TMP_DIR/$1.log" "$kept" 2>/dev/null || true
  tail -n 20 "$kept" >&2 2>/dev/null || true
  echo "$kept"
}

# Dies, naming <context> and the server's exit status with its log, unless the server is running.
require_alive() {
  local name=$1 kept status
  kill -0 "${SERVER_PID[$name]}" 2>/dev/null && return
  wait "${SERVER_PID[$name]}" && status=0 || status=$?
  kept=$(keep_server_log "$name")
  die "server '$name' (port ${PORT[$name]}) is not running $2: exit status $status (log tail above, whole log in $kept)"
}

wait_for_port() {
  local deadline=$((SECONDS + STARTUP_TIMEOUT_S))
  until curl -sk -o /dev/null --max-time 1 "$(server_url "$1")/plaintext"; do
    require_alive "$1" "(it exited while starting)"
    ((SECONDS < deadline)) || die "server '$1' did not answer on port ${PORT[$1]} within ${STARTUP_TIMEOUT_S}s"
    sleep 0.2
  done
}

stop_server() { stop_pid "${SERVER_PID[$1]}"; unset "SERVER_PID[$1]"; }

# The server's processes: nginx's master and worker, or the one .NET or Go process.
server_pids() { echo "${SERVER_PID[$1]}" $(pgrep -P "${SERVER_PID[$1]}" || true); }

# utime + stime of the server's processes, in clock ticks (/proc/<pid>/stat fields 14 and 15, after "pid (comm)").
server_cpu_ticks() {
  local pid
  for pid in $(server_pids "$1"); do sed 's/^.*) //' "/proc/$pid/stat"; done | awk '{t += $12 + $13} END {print t + 0}'
}

# Busy time (user, nice, system, irq, softirq) of the given cores together, in clock ticks (/proc/stat).
# Over loopback the kernel charges the TCP work of one connection to whichever side's context runs it (the
# receive path and the ACKs a sender processes under its socket lock), so a server's own CPU can move with its
# timing while the machine's total does not: CPU per GB is also reported for both cores.
cores_busy_ticks() {
  awk -v cores=" $* " '$1 ~ /^cpu[0-9]+$/ && index(cores, " " substr($1, 4) " ") { busy += $2 + $3 + $4 + $7 + $8 }
                       END { print busy + 0 }' /proc/stat
}

# Reads the WRK_RESULT line perf/report.lua prints (requests, bytes, duration_us, p50_us, p99_us, max_us and wrk's
# error counts) from wrk's output file into the associative array named <array>; dies naming <what> without it.
#   declare -A r=(); read_wrk_result <out> r "<what>"
read_wrk_result() {
  local out=$1 what=$3 line pair
  local -n into=$2
  line=$(grep '^WRK_RESULT ' "$out") || { cat "$out" >&2; die "no WRK_RESULT from $what"; }
  for pair in ${line#WRK_RESULT }; do into[${pair%%=*}]=${pair#*=}; done
}

# Runs a client command in the background on CLIENT_CORE (so cleanup can stop it) and waits for it.
run_client() {
  local out=$1 status=0
  shift
  taskset -c $CLIENT_CORE "$@" >"$out" 2>&1 &
  CLIENT_PID=$!
  wait "$CLIENT_PID" || status=$?
  CLIENT_PID=""
  return "$status"
}

# One wrk run with perf/report.lua against a server's <path>, DURATION_S long, on CLIENT_CORE: its WRK_RESULT in
# the associative array named <array> (as read_wrk_result), and errors = wrk's connect+read+write+status+timeout.
#   declare -A r=(); wrk_result r <server> <connections> <path> [wrk option]...
wrk_result() {
  local -n wrk_into=$1
  local name=$2 conns=$3 path=$4 out=$TMP_DIR/wrk.out
  shift 4
  run_client "$out" wrk -t1 -c"$conns" -d"${DURATION_S}s" --latency "$@" -s "$PERF_DIR/report.lua" "$(server_url "$name")/$path" \
    || { cat "$out" >&2; die "wrk failed against '$name'"; }
  read_wrk_result "$out" wrk_into "wrk against '$name'"
  wrk_into[errors]=$((wrk_into[connect] + wrk_into[read] + wrk_into[write] + wrk_into[status] + wrk_into[timeout]))
}

# A fixed warm-up (perf/coldfiles.sh, perf/proxy.sh): wrk on <path> for <seconds>, one server after another.
#   warm_for <seconds> <connections> <path> <server>...
warm_for() {
  local seconds=$1 conns=$2 path=$3 name
  for name in "${@:4}"; do
    log "warming $name for ${seconds}s"
    run_client /dev/null wrk -t1 -c"$conns" -d"${seconds}s" "$(server_url "$name")/$path"
  done
}

# The JIT-compiled method count of a .NET server (GET /perf/jit).
compiled_methods() {
  local count
  count=$(taskset -c $CLIENT_CORE curl -s --max-time 10 "$(server_url "$1")/perf/jit" \
            | sed -n 's/.*"compiledMethods":\([0-9]*\).*/\1/p' || true)
  [[ -n $count ]] || die "server '$1': GET /perf/jit gave no compiledMethods"
  echo "$count"
}

warmup_rule() {
  echo "none of the last $WARMUP_STABLE_WINDOWS windows more than $WARMUP_RISE_PCT% above the best before them and, for" \
       ".NET, at least $WARMUP_DOTNET_MIN_S s and the count of JIT-compiled methods grown by at most" \
       "$WARMUP_JIT_GROWTH_PCT% during them"
}

# Warms one server up to steady state (warmup_rule) with windows of warmup.lua, or until WARMUP_CAP_S; logs every
# window and appends it to WARMUP_CSV (the last row's "steady" says whether it got there).
warm_up() {
  local name=$1 out=$TMP_DIR/warmup.out dotnet=0 rates=() methods=() started=$SECONDS window=0 steady="" rate elapsed
  is_dotnet_server "$name" && dotnet=1
  local args=(wrk -t1 -c"$WARMUP_CONNECTIONS" -d"${WARMUP_WINDOW_S}s" --timeout "$WRK_TIMEOUT" -s "$PERF_DIR/warmup.lua"
              "$(server_url "$name")/")
  grep -qF "client $name warm-up" "$COMMANDS_FILE" || echo "client $name warm-up window: taskset -c $CLIENT_CORE ${args[*]}" >>"$COMMANDS_FILE"
  while [[ -z $steady ]]; do
    window=$((window + 1))
    require_alive "$name" "during its warm-up"
    run_client "$out" "${args[@]}" || { cat "$out" >&2; die "warm-up of '$name' failed"; }
    rate=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    [[ -n $rate ]] || { cat "$out" >&2; die "no Requests/sec from wrk in the warm-up of '$name'"; }
    rates+=("$rate")
    ((dotnet)) && methods+=("$(compiled_methods "$name")")
    elapsed=$((SECONDS - started))
    if ((${#rates[@]} > WARMUP_STABLE_WINDOWS)) && awk -v k="$WARMUP_STABLE_WINDOWS" -v pct="$WARMUP_RISE_PCT" '
        BEGIN { n = ARGC - 1; best_before = 0; best_last = 0
                for (i = 1; i <= n; i++) { v = ARGV[i] + 0; if (i <= n - k) { if (v > best_before) best_before = v } else if (v > best_last) best_last = v }
                exit !(best_last <= best_before * (1 + pct / 100)) }' "${rates[@]}" \
       && ((!dotnet || (elapsed >= WARMUP_DOTNET_MIN_S &&
            (methods[-1] - methods[-1 - WARMUP_STABLE_WINDOWS]) * 100 <= methods[-1] * WARMUP_JIT_GROWTH_PCT))); then
      steady=yes
    elif ((elapsed + WARMUP_WINDOW_S > WARMUP_CAP_S)); then
      steady=no
    fi
    echo "$name,$window,$elapsed,$rate,$steady,${methods[*]: -1}" >>"$WARMUP_CSV"
  done
  local jit_note=""; ((dotnet)) && jit_note="; JIT-compiled methods after each: ${methods[*]}"
  [[ $steady == yes ]] && log "  $name steady after ${elapsed}s ($window windows of ${WARMUP_WINDOW_S}s): ${rates[*]} req/s$jit_note" \
    || log "  $name still speeding up at the ${WARMUP_CAP_S}s cap ($window windows): ${rates[*]} req/s$jit_note"
}

# Checks status 200 and exact sizes: /plaintext's body and every file's Content-Length and byte count.
#   check_server <name> [plaintext-only]
check_server() {
  local name=$1 base body file expected got
  base=$(server_url "$name")
  body=$(taskset -c $CLIENT_CORE curl -sk --max-time 10 "$base/plaintext") || die "server '$name': GET /plaintext failed"
  [[ $body == "$PLAINTEXT_BODY" ]] || die "server '$name': GET /plaintext returned '$body', not '$PLAINTEXT_BODY'"
  [[ ${2:-} == plaintext-only ]] && return
  for file in "${FILES[@]}"; do
    expected="200 ${FILE_SIZE[$file]} ${FILE_SIZE[$file]}"
    got=$(taskset -c $CLIENT_CORE curl -sk -o /dev/null --max-time 60 \
            -w '%{http_code} %header{content-length} %{size_download}' "$base/$file.bin") || true
    [[ $got == "$expected" ]] \
      || die "server '$name': GET /$file.bin gave 'status Content-Length bytes' = '$got', expected '$expected'"
  done
}

# Called just before measuring: with --wait-quiet (WAIT_QUIET_S > 0) waits until others leave the machine 90% idle
# for 10 s (vmstat), at most WAIT_QUIET_S; sets QUIET (what was found) and LOADAVG_START.
wait_for_quiet() {
  local deadline=$((SECONDS + ${WAIT_QUIET_S:-0})) idle
  QUIET="not checked"
  ((${WAIT_QUIET_S:-0} == 0)) || install_packages_for vmstat=procps
  while ((${WAIT_QUIET_S:-0} > 0)); do
    idle=$(vmstat 10 2 | awk 'END {print $15 + $16}')   # the second report's idle + iowait %: the next 10 s
    if ((idle >= 90)); then
      QUIET="yes, ${idle}% idle over 10 s before the first measurement"; log "machine quiet: ${idle}% idle"; break
    elif ((SECONDS >= deadline)); then
      QUIET="no, ${idle}% idle after waiting ${WAIT_QUIET_S} s"; log "machine still busy (${idle}% idle); measuring anyway"; break
    fi
    log "machine busy (${idle}% idle over 10 s); waiting for it to quieten"
  done
  LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
}

# ------------------------------------------------------------------------------------------------------
# Counting per response (perf/profile.sh's plain pass, also perf/ab.sh's measurement).

# Hardware counters: a VM often has none, and then perf stat says "<not supported>". cachestat(2) (Linux 6.5+,
# our cold-file probe) is counted with its tracepoint: strace 6.1 does not know it and leaves it out of -c.
detect_hardware_counters() {
  STAT_EVENTS=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_exit_epoll_wait
  HW_COUNTERS=no
  if ! perf stat -x, -e instructions,cycles -- true 2>&1 | grep -q '<not supported>'; then
    HW_COUNTERS=yes; STAT_EVENTS=instructions,cycles,$STAT_EVENTS
  fi
  if perf stat -x, -e syscalls:sys_enter_cachestat -- true >/dev/null 2>&1; then
    STAT_EVENTS+=,syscalls:sys_enter_cachestat
  fi
}

# Context switches of every thread of the server's processes so far, "all voluntary" (/proc/PID/task/*/status).
context_switches() {
  local pid
  for pid in $(server_pids "$1"); do cat /proc/"$pid"/task/*/status 2>/dev/null; done |
    awk '/^voluntary_ctxt_switches:/ {v += $2} /^nonvoluntary_ctxt_switches:/ {n += $2} END {print v + n, v + 0}'
}

# "work_items,allocated_bytes" of a .NET server so far (ThreadPool.CompletedWorkItemCount, its own /perf/threadpool
# request included, and GC.GetTotalAllocatedBytes); "" for nginx; a field is empty where the sample lacks it (older
# commits in perf/ab.sh). Comma-separated, read with IFS=, so that an empty first field stays the first.
pool_counters() {
  is_dotnet_server "$1" || return 0
  local json
  json=$(taskset -c $CLIENT_CORE curl -sk --max-time 10 "$(server_url "$1")/perf/threadpool")
  echo "$(sed -n 's/.*"completedWorkItems":\([0-9]*\).*/\1/p' <<<"$json"),$(sed -n 's/.*"allocatedBytes":\([0-9]*\).*/\1/p' <<<"$json")"
}

# One wrk run on CLIENT_CORE with counted.lua; echoes "requests bytes duration_us sent" (sent: requests wrk wrote).
#   run_wrk <server> <scenario> <file, or plaintext> <connections> <pass>
run_wrk() {
  local name=$1 scenario=$2 file=$3 conns=$4 pass=$5 out=$TMP_DIR/wrk.out path=$3.bin
  [[ $file != plaintext ]] || path=plaintext
  local args=(wrk -t1 -c"$conns" -d"${DURATION_S}s" --timeout "$WRK_TIMEOUT" -s "$PERF_DIR/counted.lua"
              "$(server_url "$name")/$path")
  grep -qF "client $scenario:" "$COMMANDS_FILE" || echo "client $scenario: taskset -c $CLIENT_CORE ${args[*]}" >>"$COMMANDS_FILE"
  require_alive "$name" "before $scenario ($pass)"
  run_client "$out" "${args[@]}" || { cat "$out" >&2; die "wrk failed against '$name' in $scenario ($pass)"; }
  require_alive "$name" "after $scenario ($pass)"
  declare -A r=(); read_wrk_result "$out" r "'$name' in $scenario"
  ((r[requests] > 0)) || { cat "$out" >&2; die "'$name' completed no response in $scenario ($pass)"; }
  ((r[status] == 0)) || die "'$name' answered ${r[status]} requests with a non-2xx status in $scenario ($pass)"
  local errors=$((r[connect] + r[read] + r[write] + r[timeout]))
  ((errors == 0)) || log "  note: wrk counted $errors socket errors against $name in $scenario ($pass)"
  local sent; sent=$(sed -n 's/^WRK_SENT sent=\([0-9]*\).*/\1/p' "$out")
  [[ -n $sent ]] || { cat "$out" >&2; die "no WRK_SENT from wrk against '$name' in $scenario"; }
  echo "${r[requests]} ${r[bytes]} ${r[duration_us]} $sent"
}

# Starts a probe (perf stat or strace) attached to the server in the background; stop_probe ends it with SIGINT,
# which makes either write out what it has.
start_probe() { "$@" >"$TMP_DIR/probe.err" 2>&1 & PROBE_PID=$!; }
stop_probe() { stop_pid "$PROBE_PID" INT; PROBE_PID=""; }

# The columns of the rows plain_pass appends to CSV.
readonly PLAIN_PASS_CSV_HEADER="server,scenario,file,connections,pass,requests,sent,bytes,duration_us,task_clock_ms,cpu_ticks,context_switches,pool_work_items,syscalls,epoll_wait_returns,perf_context_switches,instructions,cycles,cachestat,voluntary_context_switches,allocated_bytes"

# One counted wrk run: CPU, context switches (all, and voluntary), pool work items, syscall entries, epoll_wait
# returns and managed bytes allocated over the run, as one row of CSV (divided per response by the reports).
#   plain_pass <server> <scenario> <file, or plaintext> <connections> [pass label, default plain]
plain_pass() {
  local name=$1 scenario=$2 file=$3 conns=$4 pass=${5:-plain} stat_out=$TMP_DIR/stat.csv
  local ctx0 ctx1 vol0 vol1 pool0 pool1 alloc0 alloc1 ticks0 ticks1 wrk requests bytes duration_us sent value event
  IFS=, read -r pool0 alloc0 <<<"$(pool_counters "$name")"
  read -r ctx0 vol0 < <(context_switches "$name"); ticks0=$(server_cpu_ticks "$name")
  grep -qF "perf stat:" "$COMMANDS_FILE" || echo "perf stat: perf stat -x, -o FILE -e $STAT_EVENTS -p PID" >>"$COMMANDS_FILE"
  start_probe perf stat -x, -o "$stat_out" -e "$STAT_EVENTS" -p "$(server_pids "$name" | tr ' ' ,)"
  wrk=$(run_wrk "$name" "$scenario" "$file" "$conns" "$pass")
  stop_probe
  read -r ctx1 vol1 < <(context_switches "$name"); ticks1=$(server_cpu_ticks "$name")
  IFS=, read -r pool1 alloc1 <<<"$(pool_counters "$name")"
  local -A stat=()
  while IFS=, read -r value _ event _; do [[ -z $event ]] || stat[$event]=$value; done < <(grep -v '^#' "$stat_out" | grep ,)
  read -r requests bytes duration_us sent <<<"$wrk"
  local pool="" allocated=""
  [[ -z $pool0 || -z $pool1 ]] || pool=$((pool1 - pool0))
  [[ -z $alloc0 || -z $alloc1 ]] || allocated=$((alloc1 - alloc0))
  echo "$name,$scenario,$file,$conns,$pass,$requests,$sent,$bytes,$duration_us,${stat[task-clock]:-},$((ticks1 - ticks0)),$((ctx1 - ctx0)),$pool,${stat[raw_syscalls:sys_enter]:-},${stat[syscalls:sys_exit_epoll_wait]:-},${stat[context-switches]:-},${stat[instructions]:-},${stat[cycles]:-},${stat[syscalls:sys_enter_cachestat]:-},$((vol1 - vol0)),$allocated" >>"$CSV"
  log "  $name $pass: $requests responses ($sent sent), $(awk -v t="${stat[task-clock]:-0}" -v n="$sent" 'BEGIN {printf "%.1f", 1000 * t / n}') us CPU each"
}
