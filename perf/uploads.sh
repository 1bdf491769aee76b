#!/usr/bin/env bash
# perf/uploads.sh — 4 parallel 1 GiB uploads (curl -T), side by side (issue #11; perf/README.md).
#   perf/uploads.sh [--rounds N]        results: perf/results/uploads.md
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

# Starts a server saving uploads into TMP_DIR/<name>/upload (nginx's root is TMP_DIR/nginx) and waits until it answers.
# None fsyncs (nginx never does for client bodies): the figures are the servers' own work, not the disk's.
start_server() {
  local name=$1 port=${PORT[$1]} uploads=$TMP_DIR/$1/upload cmd
  local dav="dav_methods PUT; client_max_body_size 0; client_body_in_file_only on; client_body_temp_path $TMP_DIR/$1;"
  mkdir -p "$uploads"
  case "$name" in
    splice|sockets) cmd=$(dotnet_server_command "$name" "$port" "" "--uploads $uploads --upload-fsync false") ;;
    nginx) cmd=$(FILES_DIR=$TMP_DIR/nginx FD_LIMIT=1024 nginx_server_command "$TMP_DIR/nginx" "$port" 1024 "$dav") ;;
    go) cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/gopeer upload -dir $uploads -addr 127.0.0.1:$port" ;;
  esac
  start_server_process "$name" "$cmd"
  wait_for_port "$name"
}

# Uploads FILES_DIR/<source|warmup>.bin CLIENTS times at once as <prefix>1…; checks 201 (nginx: 201 or 204) and sizes.
upload_all() {
  local name=$1 file=$2 prefix=$3 codes
  codes=$(seq "$CLIENTS" | taskset -c $CLIENT_CORE xargs -P "$CLIENTS" -I{} curl -sS --max-time 300 -w '%{http_code} ' \
            -o "$TMP_DIR/response-{}" -T "$FILES_DIR/$file.bin" "$(server_url "$name")/upload/$prefix{}") \
    || die "$name: an upload failed (curl's message above)"
  [[ $codes =~ ^(20[14] ){$CLIENTS}$ ]] || die "$name: the uploads answered $codes"
  (($(find "$TMP_DIR/$name/upload" -name "$prefix*" -size "${FILE_SIZE[$file]}c" | wc -l) == CLIENTS)) \
    || die "$name: not every $prefix* saved has ${FILE_SIZE[$file]} bytes: $(ls -l "$TMP_DIR/$name/upload")"
}

# The measuring part, run under the lock. The order rotates by round, so that a slow drift hits every server alike.
measure() {
  begin_run uploads
  local name n round i count=${#SERVERS[@]} warm_since t0 t1 ticks row spliced report=$RESULTS_DIR/uploads.md
  echo "server,round,cpu_s,wall_s,bytes,spliced_bytes" >"$TMP_DIR/results.csv"
  for name in "${SERVERS[@]}"; do
    log "$name: starting on 127.0.0.1:${PORT[$name]} (core $SERVER_CORE)"
    start_server "$name"
    warm_since=$SECONDS
    while :; do
      upload_all "$name" warmup warm
      cmp -s "$FILES_DIR/warmup.bin" "$TMP_DIR/$name/upload/warm1" || die "$name: the saved warm-up file differs"
      rm -f "$TMP_DIR/$name"/upload/*
      is_dotnet_server "$name" && ((SECONDS < warm_since + DOTNET_WARMUP_S)) || break
    done
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < count; i++)); do
      name=${SERVERS[(i + round - 1) % count]}
      # One unmeasured upload of that size first: this Firecracker VM hands long-free guest memory to its host, which
      # faults back in inside the kernel's copy, charged to the server (perf record: 3x the CPU); just-freed does not.
      upload_all "$name" source warm
      # Earlier uploads deleted and written back, or one server's writeback would throttle the next and cost it CPU.
      for n in "${SERVERS[@]}"; do rm -f "$TMP_DIR/$n"/upload/*; done
      sync
      ticks=$(server_cpu_ticks "$name") t0=${EPOCHREALTIME/,/.}   # "." whatever the locale, for awk
      upload_all "$name" source "r$round-"
      t1=${EPOCHREALTIME/,/.} ticks=$(($(server_cpu_ticks "$name") - ticks))
      row=$(awk -v c="$ticks" -v hz="$(getconf CLK_TCK)" -v t="$t0" -v u="$t1" 'BEGIN {printf "%.2f,%.3f", c/hz, u-t}')
      # The sample's responses say how many bytes it spliced ("splicedBytes"); empty for nginx and Go.
      spliced=$(awk -F'"splicedBytes":' 'NF > 1 { s += $2; n++ } END { if (n) printf "%.0f", s }' "$TMP_DIR"/response-*)
      echo "$name,$round,$row,$((CLIENTS * FILE_SIZE[source])),$spliced" >>"$TMP_DIR/results.csv"
      log "$name round $round: $(tail -n 1 "$TMP_DIR/results.csv")"
      ((round > 1)) || cmp -s "$FILES_DIR/source.bin" "$TMP_DIR/$name/upload/r1-1" || die "$name: saved file differs"
    done
  done
  cat >"$report" <<EOF
# 4 parallel 1 GiB uploads (curl -T)

- Measured: \`src/\` as of commit $SRC_COMMIT; \`perf/uploads.sh --rounds $ROUNDS\`
- Load average at the end: $(cat /proc/loadavg) (the machine is shared; other work may have run)
- Every server pinned to core 0, the 4 curl clients to core 1; nothing fsyncs; each body goes to a temporary file beside its target, renamed into place.
- Warm-up: 4 × 256 MiB uploads, repeated for 60 s on the .NET servers (past tier-1 compilation).
- Cells: median over rounds (min–max). CPU = the server's utime + stime per GiB received. Ratios from the medians of this one run.

| server | CPU s/GiB | throughput MiB/s | CPU × sockets | CPU × nginx | throughput × sockets | throughput × nginx |
|---|---|---|---|---|---|---|
EOF
  PYTHONPATH=$PERF_DIR python3 - "$TMP_DIR/results.csv" >>"$report" <<'EOF'
import statistics, sys
from tables import cell, quotient, read_rows, two
rows = read_rows(sys.argv[1])
labels = {"splice": "sample on SpliceTransport (body spliced into the file)", "sockets": "sample on Kestrel sockets",
          "nginx": "nginx, DAV PUT, client_body_in_file_only on", "go": "Go net/http, io.Copy into *os.File"}
cpu = {n: [float(r["cpu_s"]) * 2**30 / int(r["bytes"]) for r in rows if r["server"] == n] for n in labels}
tput = {n: [int(r["bytes"]) / 2**20 / float(r["wall_s"]) for r in rows if r["server"] == n] for n in labels}
c, t = ({n: statistics.median(v) for n, v in d.items()} for d in (cpu, tput))
for n, label in labels.items():
    print(f"| {label} | {cell(cpu[n], two, always=True)} | {cell(tput[n], '{:.0f}'.format, always=True)} | "
          + " | ".join(quotient(m[n], m[base]) for m in (c, t) for base in ("sockets", "nginx")) + " |")
EOF
  printf '\n## Raw rounds\n\n```\n%s\n```\n\n## Servers\n\n```\n%s\n```\n' "$(<"$TMP_DIR/results.csv")" \
    "$(<"$COMMANDS_FILE")" >>"$report"
  log "wrote perf/results/uploads.md"
}

main() {
  parse_options --rounds "$@"
  begin_run uploads
  install_packages_for nginx=nginx-light go=golang-go curl=curl taskset=util-linux
  make_files
  build_sample
  build_gopeer
  take_perf_lock
  export SRC_COMMIT LOCK_FD           # the measuring part's result names the src/ built here; its servers drop the lock
  log "measuring; stopped after ${LOCKED_LIMIT_S}s"
  timeout --kill-after=10 "$LOCKED_LIMIT_S" "$0" --measure --rounds "$ROUNDS"
}

if [[ ${1:-} == --measure ]]; then shift; parse_options --rounds "$@"; measure; else main "$@"; fi
