#!/usr/bin/env bash
# perf/uploads.sh — 4 parallel 1 GiB uploads (curl -T), side by side (issue #11).
#
#   perf/uploads.sh [--rounds N]        results: perf/results/uploads.md
#
# Every server runs at once, pinned to core 0 (the 4 curl clients on core 1); each round measures them in turn:
#   splice   the sample on SpliceTransport, --uploads (SaveBodyToFileAsync: after what has arrived when the app
#            asks, the body is spliced socket -> kernel pipe -> file, with placeholders through Kestrel)
#   sockets  the same sample on Kestrel's socket transport
#   nginx    DAV PUT with client_body_in_file_only on: the body goes to a temporary file, then is renamed
#   go       perf/gopeer upload: net/http, io.Copy from the request body into an *os.File, then a rename
# Each saves into a temporary file beside the target, then renames it; none fsyncs (nginx never does for client
# bodies): the figures are the servers' own work, not the disk's. CPU seconds (utime + stime) per GiB received and
# throughput (4 GiB ÷ the 4 uploads' wall time), median over rounds. Measuring holds /work/perf.lock, 12 min at most.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
FILES_DIR=$CACHE_DIR/uploads          # the files uploaded, made once

readonly SERVERS=(splice sockets nginx go)
declare -A PORT=([splice]=18181 [sockets]=18182 [nginx]=18183 [go]=18184)
readonly CLIENTS=4
FILES=(source warmup)                 # each server first takes 4 × warmup, the .NET ones for DOTNET_WARMUP_S
declare -A FILE_SIZE=([source]=$((1024 * 1024 * 1024)) [warmup]=$((256 * 1024 * 1024)))
readonly DOTNET_WARMUP_S=60           # past tier-1 promotion (36-52 s under load on one core, see perf/README.md)
readonly LOCKED_LIMIT_S=720           # 12 minutes: the most any perf run may hold the machine
ROUNDS=3

write_dav_config() {
  local dir=$1 uploads=$2
  mkdir -p "$dir" "$uploads/.nginx-body"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location /upload/ {
            alias $uploads/; dav_methods PUT; client_max_body_size 0;
            client_body_in_file_only on; client_body_temp_path $uploads/.nginx-body;
        }
    }
}
EOF
}

# Starts a server saving uploads into TMP_DIR/<name>, and waits until it answers.
start_server() {
  local name=$1 port=${PORT[$1]} uploads=$TMP_DIR/$1 conf=$TMP_DIR/nginx-conf cmd
  mkdir -p "$uploads"
  case "$name" in
    splice|sockets) cmd=$(dotnet_server_command "$name" "$port" "" "--uploads $uploads --upload-fsync false") ;;
    nginx) write_dav_config "$conf" "$uploads"
           cmd=$(nginx_command "$conf") ;;
    go) cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/gopeer upload -dir $uploads -addr 127.0.0.1:$port" ;;
  esac
  start_server_process "$name" "$cmd"
  wait_for_port "$name"
}

# Uploads <file> CLIENTS times in parallel as <prefix>1…; checks 201 (nginx: 201 or 204) and each saved size.
upload_all() {
  local name=$1 file=$2 prefix=$3 i size
  local -a pids=()
  for ((i = 1; i <= CLIENTS; i++)); do
    taskset -c $CLIENT_CORE curl -sS --max-time 300 -o "$TMP_DIR/response-$i" -w '%{http_code}' -T "$file" \
      "$(server_url "$name")/upload/$prefix$i" >"$TMP_DIR/status-$i" 2>"$TMP_DIR/curl-$i.log" &
    pids[i]=$!
  done
  for i in "${!pids[@]}"; do wait "${pids[i]}" || die "$name: curl $i failed: $(<"$TMP_DIR/curl-$i.log")"; done
  for ((i = 1; i <= CLIENTS; i++)); do
    [[ $(<"$TMP_DIR/status-$i") == 20[14] ]] || die "$name: upload $prefix$i answered $(<"$TMP_DIR/status-$i")"
    size=$(stat -c %s "$TMP_DIR/$name/$prefix$i")
    [[ $size == $(stat -c %s "$file") ]] || die "$name: $prefix$i has $size bytes"
  done
}

# The bytes the last upload_all's responses say were spliced (the sample's "splicedBytes"; empty for the others).
spliced_bytes() { cat "$TMP_DIR"/response-* | { grep -o '"splicedBytes":[0-9]*' || true; } | awk -F: '{ s += $2; n++ } END { if (n) printf "%.0f\n", s }'; }

# The measuring part, run under the lock.
measure() {
  begin_run uploads
  local name n round i count=${#SERVERS[@]} warm_until t0 t1 ticks row
  echo "server,round,cpu_s,wall_s,bytes,spliced_bytes" >"$TMP_DIR/results.csv"
  # All started and warmed first; then each round measures them in turn, the order rotating: a slow drift hits all alike.
  for name in "${SERVERS[@]}"; do
    log "$name: starting on 127.0.0.1:${PORT[$name]} (core $SERVER_CORE)"
    start_server "$name"
    warm_until=0; is_dotnet_server "$name" && warm_until=$((SECONDS + DOTNET_WARMUP_S))
    while :; do
      upload_all "$name" "$FILES_DIR/warmup.bin" warm
      cmp -s "$FILES_DIR/warmup.bin" "$TMP_DIR/$name/warm1" || die "$name: the saved warm-up file differs from the source"
      rm -f "$TMP_DIR/$name"/warm*
      ((SECONDS < warm_until)) || break
    done
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < count; i++)); do
      name=${SERVERS[(i + round - 1) % count]}
      # One unmeasured upload of that size first: this Firecracker VM hands long-free guest memory to its host, and it
      # faults back in inside the kernel's copy, charged to the server (perf record: 3x the CPU); just freed, it has not.
      upload_all "$name" "$FILES_DIR/source.bin" warm; rm -f "$TMP_DIR/$name"/warm*
      # Earlier uploads deleted and written back (sync), or one server's writeback would throttle the next and cost it CPU.
      for n in "${SERVERS[@]}"; do rm -f "$TMP_DIR/$n"/r*; done; sync
      ticks=$(server_cpu_ticks "$name") t0=${EPOCHREALTIME/,/.}   # "." whatever the locale, for awk
      upload_all "$name" "$FILES_DIR/source.bin" "r${round}-"
      t1=${EPOCHREALTIME/,/.} ticks=$(($(server_cpu_ticks "$name") - ticks))
      row=$(awk -v c="$ticks" -v hz="$(getconf CLK_TCK)" -v t="$t0" -v u="$t1" 'BEGIN {printf "%.2f,%.3f", c / hz, u - t}')
      echo "$name,$round,$row,$((CLIENTS * FILE_SIZE[source])),$(spliced_bytes)" >>"$TMP_DIR/results.csv"
      log "$name round $round: $(tail -n 1 "$TMP_DIR/results.csv")"
      ((round > 1)) || cmp -s "$FILES_DIR/source.bin" "$TMP_DIR/$name/r1-1" || die "$name: the saved file differs from the source"
    done
  done
  write_report >"$RESULTS_DIR/uploads.md"
  log "wrote perf/results/uploads.md"
}

write_report() {
  cat <<EOF
# 4 parallel 1 GiB uploads (curl -T)

- Measured: \`src/\` as of commit $SRC_COMMIT; \`perf/uploads.sh --rounds $ROUNDS\`
- Load average at the end: $(cat /proc/loadavg) (the machine is shared; other work may have run)
- Every server pinned to core 0, the 4 curl clients to core 1; nothing fsyncs; each body goes to a temporary file beside its target, renamed into place.
- Warm-up: 4 × 256 MiB uploads, repeated for 60 s on the .NET servers (past tier-1 compilation).
- Cells: median over rounds (min–max). CPU = the server's utime + stime per GiB received. Ratios from the medians of this one run.

| server | CPU s/GiB | throughput MiB/s | CPU × sockets | CPU × nginx | throughput × sockets | throughput × nginx |
|---|---|---|---|---|---|---|
EOF
  python3 - "$TMP_DIR/results.csv" <<'EOF'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
labels = {"splice": "sample on SpliceTransport (body spliced into the file)", "sockets": "sample on Kestrel sockets",
          "nginx": "nginx, DAV PUT, client_body_in_file_only on", "go": "Go net/http, io.Copy into *os.File"}
cpu = {n: [float(r["cpu_s"]) / (int(r["bytes"]) / 2**30) for r in rows if r["server"] == n] for n in labels}
tput = {n: [int(r["bytes"]) / 2**20 / float(r["wall_s"]) for r in rows if r["server"] == n] for n in labels}
c, t = ({n: st.median(v) for n, v in d.items()} for d in (cpu, tput))
def cell(v, fmt): return f"{fmt.format(st.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"
for n, label in labels.items():
    print(f"| {label} | {cell(cpu[n], '{:.2f}')} | {cell(tput[n], '{:.0f}')} | {c[n] / c['sockets']:.2f}× | {c[n] / c['nginx']:.2f}× | "
          f"{t[n] / t['sockets']:.2f}× | {t[n] / t['nginx']:.2f}× |")
EOF
  printf '\n## Raw rounds\n\n```\n%s\n```\n\n## Servers\n\n```\n%s\n```\n' "$(<"$TMP_DIR/results.csv")" "$(<"$COMMANDS_FILE")"
}

main() {
  parse_options --rounds "$@"
  begin_run uploads
  install_packages_for nginx=nginx-light go=golang-go curl=curl taskset=util-linux
  make_files
  build_sample
  build_gopeer
  export SRC_COMMIT                   # the measuring part's result names the src/ built here
  take_perf_lock
  export LOCK_FD                      # so that the measuring part's servers do not inherit the lock
  log "measuring; stopped after ${LOCKED_LIMIT_S}s"
  timeout --kill-after=10 "$LOCKED_LIMIT_S" "$0" --measure --rounds "$ROUNDS"
}

if [[ ${1:-} == --measure ]]; then shift; parse_options --rounds "$@"; measure; else main "$@"; fi
