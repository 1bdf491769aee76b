#!/usr/bin/env bash
# perf/uploads.sh — 4 parallel 1 GiB uploads (curl -T), side by side (issue #11).
#
# Every server runs at once, pinned to core 0 (the 4 curl clients on core 1); each round measures them in turn:
#   splice   the sample on SpliceTransport, --uploads (SaveBodyToFileAsync: after what has arrived when the app
#            asks, the body is spliced socket -> kernel pipe -> file, with placeholders through Kestrel)
#   sockets  the same sample on Kestrel's socket transport
#   nginx    DAV PUT with client_body_in_file_only on: the body goes to a temporary file, then is renamed
#   go       perf/uploadserver: net/http, io.Copy from the request body into an *os.File, then a rename
# Every server writes into a temporary file beside the target and renames it into place; none fsyncs (the
# sample runs with --upload-fsync false, Go without -fsync; nginx never fsyncs client bodies), so the figures
# are the servers' own work, not the disk's.
#
# Reported per server: server CPU seconds (utime + stime of its processes, from /proc) per GiB received, and
# throughput (4 GiB ÷ wall time from the first curl's start to the last one's end), median over rounds.
# Each server first takes 4 × 256 MiB uploads; the .NET servers take them again and again for DOTNET_WARMUP_S
# (tier-1 compilation comes 36-52 s into constant load on one core, see perf/README.md's warm-up section).
#
# The measuring part holds /work/perf.lock (so two helpers never measure at once) and is stopped after 12 min.
#
#   perf/uploads.sh [--rounds N]        results: perf/results/uploads.md
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
REPO_DIR=$(dirname "$PERF_DIR")
CACHE_DIR=$PERF_DIR/.cache
DATA_DIR=$CACHE_DIR/uploads                 # the source files, made once
SAMPLE_PROJECT=$REPO_DIR/samples/StaticFileServer
SAMPLE_COPY_DIR=$CACHE_DIR/uploads-sample
BIN_DIR=$CACHE_DIR/bin
RESULTS=$PERF_DIR/results/uploads.md
PERF_LOCK=/work/perf.lock

readonly SERVER_CORE=0
readonly CLIENT_CORE=1
readonly SERVERS=(splice sockets nginx go)
declare -A PORT=([splice]=18181 [sockets]=18182 [nginx]=18183 [go]=18184)
readonly STOP_TIMEOUT_S=5
readonly CLIENTS=4
readonly UPLOAD_SIZE=$((1024 * 1024 * 1024))
readonly WARMUP_SIZE=$((256 * 1024 * 1024))
readonly DOTNET_WARMUP_S=60          # past tier-1 promotion (36-52 s under load on one core)
readonly LOCKED_LIMIT_S=720          # 12 minutes: the most any perf run may hold the machine

ROUNDS=3
MEASURE=0
while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --measure) MEASURE=1; shift ;;   # internal: the part run under the lock
    *) echo "usage: perf/uploads.sh [--rounds N]" >&2; exit 2 ;;
  esac
done



prepare() {
  install_packages_for nginx=nginx-light go=golang-go curl=curl taskset=util-linux
  mkdir -p "$DATA_DIR" "$BIN_DIR"
  local name size
  for name in source warmup; do
    size=$UPLOAD_SIZE; [[ $name == warmup ]] && size=$WARMUP_SIZE
    if [[ ! -f $DATA_DIR/$name.bin || $(stat -c %s "$DATA_DIR/$name.bin") != "$size" ]]; then
      log "generating $DATA_DIR/$name.bin ($size bytes, once)"
      head -c "$size" /dev/urandom >"$DATA_DIR/$name.bin.tmp" && mv "$DATA_DIR/$name.bin.tmp" "$DATA_DIR/$name.bin"
    fi
  done
  log "building the sample (Release) and perf/uploadserver"
  dotnet build -c Release "$SAMPLE_PROJECT" -nologo -v q >"$CACHE_DIR/uploads-build.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/uploads-build.log" >&2; die "dotnet build of samples/StaticFileServer failed"; }
  rm -rf "$SAMPLE_COPY_DIR"
  cp -a "$SAMPLE_PROJECT/bin/Release/net10.0" "$SAMPLE_COPY_DIR"
  (cd "$PERF_DIR/uploadserver" &&
    GOCACHE=$CACHE_DIR/go-build GOPATH=$CACHE_DIR/gopath GOTOOLCHAIN=local GOFLAGS= go build -o "$BIN_DIR/uploadserver" .) \
    || die "go build of perf/uploadserver failed"
}

# ---- the measuring part, under the lock ----

TMP_DIR=""
declare -A SERVER_PID=()

cleanup() {
  local name
  for name in "${!SERVER_PID[@]}"; do stop_pid "${SERVER_PID[$name]}"; done
  [[ -n $TMP_DIR ]] && rm -rf "$TMP_DIR"
}

write_nginx_config() {
  local dir=$1 port=$2 uploads=$3
  mkdir -p "$dir" "$uploads/.nginx-body"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$port;
        location = /ready { return 200 "ok\n"; }
        location /upload/ {
            alias $uploads/;
            dav_methods PUT;
            client_max_body_size 0;
            client_body_in_file_only on;
            client_body_temp_path $uploads/.nginx-body;
        }
    }
}
EOF
}

start_server() {
  local name=$1 port=${PORT[$1]} uploads=$TMP_DIR/$1 cmd
  mkdir -p "$uploads" "$TMP_DIR/empty-root"
  case "$name" in
    splice|sockets)
      cmd="env DOTNET_gcServer=0 taskset -c $SERVER_CORE $SAMPLE_COPY_DIR/StaticFileServer --root $TMP_DIR/empty-root --urls http://127.0.0.1:$port --transport $name --uploads $uploads --upload-fsync false" ;;
    nginx)
      write_nginx_config "$TMP_DIR/nginx-conf" "$port" "$uploads"
      cmd="taskset -c $SERVER_CORE nginx -p $TMP_DIR/nginx-conf -c $TMP_DIR/nginx-conf/nginx.conf -e $TMP_DIR/nginx-conf/error.log -g 'daemon off;'" ;;
    go)
      cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/uploadserver -dir $uploads -addr 127.0.0.1:$port" ;;
  esac
  ! ss -Hltn "sport = :$port" | grep -q . || die "port $port is in use (another perf/uploads.sh?)"
  echo "server $name: $cmd" >>"$TMP_DIR/commands.txt"
  eval "exec $cmd" >"$TMP_DIR/$name.log" 2>&1 &
  SERVER_PID[$name]=$!
  local deadline=$((SECONDS + 30))
  until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/ready"; do
    ((SECONDS < deadline)) && kill -0 "${SERVER_PID[$name]}" 2>/dev/null || { cat "$TMP_DIR/$name.log" >&2; die "$name did not start"; }
    sleep 0.2
  done
}

# Uploads <file> CLIENTS times in parallel as <prefix>1…; checks 201 (nginx: 201 or 204) and each saved size.
upload_all() {
  local name=$1 file=$2 prefix=$3 i status size
  local -a pids=()
  for ((i = 1; i <= CLIENTS; i++)); do
    taskset -c $CLIENT_CORE curl -sS --max-time 300 -o "$TMP_DIR/response-$i" -w '%{http_code}' -T "$file" \
      "http://127.0.0.1:${PORT[$name]}/upload/$prefix$i" >"$TMP_DIR/status-$i" 2>"$TMP_DIR/curl-$i.log" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || die "$name: curl $((i + 1)) failed: $(cat "$TMP_DIR/curl-$((i + 1)).log")"; done
  for ((i = 1; i <= CLIENTS; i++)); do
    status=$(cat "$TMP_DIR/status-$i")
    [[ $status == 201 || $status == 204 ]] || die "$name: upload $prefix$i answered $status"
    size=$(stat -c %s "$TMP_DIR/$name/$prefix$i")
    [[ $size == $(stat -c %s "$file") ]] || die "$name: $prefix$i has $size bytes"
  done
}

# The bytes the last upload_all's responses say were spliced (the sample's "splicedBytes"; empty for the others).
spliced_bytes() {
  cat "$TMP_DIR"/response-* | { grep -o '"splicedBytes":[0-9]*' || true; } | awk -F: '{ s += $2; n++ } END { if (n) printf "%.0f\n", s }'
}

# Deletes every server's saved files of the measured rounds (r<round>-<client>).
remove_measured_uploads() {
  local name
  for name in "${SERVERS[@]}"; do rm -f "$TMP_DIR/$name"/r*; done
}

measure() {
  TMP_DIR=$(mktemp -d /tmp/splice-uploads.XXXXXX)
  trap cleanup EXIT INT TERM
  local clk name round t0 t1 c0 c1
  clk=$(getconf CLK_TCK)
  echo "server,round,cpu_s,wall_s,bytes,spliced_bytes" >"$TMP_DIR/results.csv"
  # Every server is started and warmed first; then each round measures them one after another (the order
  # rotating by round), so a slow drift of a shared machine hits all alike. Before each measured upload the
  # previous one's files are deleted and the dirty page cache written back (sync): otherwise the writeback of one
  # server's 4 GiB would throttle the next one's writes and charge it CPU.
  for name in "${SERVERS[@]}"; do
    log "$name: starting on 127.0.0.1:${PORT[$name]} (core $SERVER_CORE)"
    start_server "$name"
    local warm_until=$((SECONDS + DOTNET_WARMUP_S))
    [[ $name == splice || $name == sockets ]] || warm_until=0
    while :; do
      upload_all "$name" "$DATA_DIR/warmup.bin" warm
      cmp -s "$DATA_DIR/warmup.bin" "$TMP_DIR/$name/warm1" || die "$name: the saved warm-up file differs from the source"
      rm -f "$TMP_DIR/$name"/warm*
      ((SECONDS < warm_until)) || break
    done
  done
  local i count=${#SERVERS[@]}
  for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < count; i++)); do
      name=${SERVERS[$(((i + round - 1) % count))]}
      # One unmeasured upload of the measured size first, its files deleted just before the measured one: the VM
      # reports free guest memory to its host (Firecracker, "Free page reporting enabled", 8 MiB blocks, after a
      # delay), and the first gigabytes written into memory free for a while fault back in from the host inside the
      # kernel's copy, charged to the server (perf record: the same memcpy, 3x the CPU: 12.7 against 3.3 CPU-s).
      # Memory freed a moment before is reused before it is reported.
      upload_all "$name" "$DATA_DIR/source.bin" warm; rm -f "$TMP_DIR/$name"/warm*
      remove_measured_uploads; sync
      c0=$(server_cpu_ticks "$name"); t0=$(date +%s.%N)
      upload_all "$name" "$DATA_DIR/source.bin" "r${round}-"
      t1=$(date +%s.%N); c1=$(server_cpu_ticks "$name")
      echo "$name,$round,$(awk -v a="$c0" -v b="$c1" -v k="$clk" 'BEGIN{printf "%.2f", (b-a)/k}'),$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'),$((CLIENTS * UPLOAD_SIZE)),$(spliced_bytes)" >>"$TMP_DIR/results.csv"
      log "$name round $round: $(tail -n 1 "$TMP_DIR/results.csv")"
      ((round == 1)) && { cmp -s "$DATA_DIR/source.bin" "$TMP_DIR/$name/r1-1" || die "$name: the saved file differs from the source"; }
    done
  done
  remove_measured_uploads
  for name in "${SERVERS[@]}"; do stop_pid "${SERVER_PID[$name]}"; unset "SERVER_PID[$name]"; done
  write_report
}

write_report() {
  local src_commit
  src_commit=$(git -C "$REPO_DIR" log -1 --format=%h -- src)
  python3 - "$TMP_DIR/results.csv" "$RESULTS" "$src_commit" "$ROUNDS" "$(cat /proc/loadavg)" "$TMP_DIR/commands.txt" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
out, commit, rounds, load, commands = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], open(sys.argv[6]).read()
gib = 1024 ** 3
labels = {"splice": "sample on SpliceTransport (body spliced into the file)", "sockets": "sample on Kestrel sockets",
          "nginx": "nginx, DAV PUT, client_body_in_file_only on", "go": "Go net/http, io.Copy into *os.File"}
stats = {}
for name in labels:
    mine = [r for r in rows if r["server"] == name]
    cpu = [float(r["cpu_s"]) / (int(r["bytes"]) / gib) for r in mine]
    mib_s = [int(r["bytes"]) / 2**20 / float(r["wall_s"]) for r in mine]
    stats[name] = (cpu, mib_s)
def cell(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"
with open(out, "w") as f:
    f.write("# 4 parallel 1 GiB uploads (curl -T)\n\n")
    f.write(f"- Measured: `src/` as of commit {commit}; `perf/uploads.sh --rounds {rounds}`\n")
    f.write(f"- Load average at the end: {load} (the machine is shared; other work may have run)\n")
    f.write("- Every server pinned to core 0, the 4 curl clients to core 1; nothing fsyncs; each body goes to a temporary file beside its target, renamed into place.\n")
    f.write("- Warm-up: 4 × 256 MiB uploads, repeated for 60 s on the .NET servers (past tier-1 compilation).\n")
    f.write("- Cells: median over rounds (min–max). CPU = the server's utime + stime per GiB received. Ratios from the medians of this one run.\n\n")
    f.write("| server | CPU s/GiB | throughput MiB/s | CPU × sockets | CPU × nginx | throughput × sockets | throughput × nginx |\n|---|---|---|---|---|---|---|\n")
    sc, st = statistics.median(stats["sockets"][0]), statistics.median(stats["sockets"][1])
    nc, nt = statistics.median(stats["nginx"][0]), statistics.median(stats["nginx"][1])
    for name, label in labels.items():
        cpu, tput = stats[name]
        c, t = statistics.median(cpu), statistics.median(tput)
        f.write(f"| {label} | {cell(cpu, '{:.2f}')} | {cell(tput, '{:.0f}')} | {c/sc:.2f}× | {c/nc:.2f}× | {t/st:.2f}× | {t/nt:.2f}× |\n")
    f.write("\n## Raw rounds\n\n```\n" + open(sys.argv[1]).read() + "```\n\n## Servers\n\n```\n" + commands + "```\n")
PY
  log "wrote $RESULTS"
}

if ((MEASURE)); then
  measure
else
  prepare
  log "waiting for $PERF_LOCK (other perf runs finish first); the measuring part is stopped after ${LOCKED_LIMIT_S}s"
  flock "$PERF_LOCK" timeout --kill-after=10 "$LOCKED_LIMIT_S" "$0" --measure --rounds "$ROUNDS"
fi
