#!/usr/bin/env bash
# perf/ab.sh — an A/B of two commits that decides under noise (issue #19): the sample static file server at
# REF-A and at REF-B, alternated round by round (A B, B A, A B, ...) on the same pinned cores, with the
# counts per response that do not depend on how busy the machine is next to the CPU time that does.
#
#   perf/ab.sh REF-A REF-B [SCENARIO]    default scenario file-4KiB-c32; 6 round pairs, about 9 minutes
#   perf/ab.sh HEAD~1 HEAD https-plaintext-c32 --rounds 8
#   perf/ab.sh HEAD HEAD --transport-b sockets   Kestrel's sockets (B) against splice (A), both at HEAD
#   perf/ab.sh A B --smoke               1 round pair, 2 s warm-up, 2 s measured: checks the script only
#
# Options: --rounds N (round pairs, default 6), --warmup S (default 30), --duration S (default 10),
# --transport splice|sockets (both builds), --transport-a T, --transport-b T, --name NAME,
# --wait-quiet S (first wait up to S seconds for the machine to be 90% idle).
# Scenarios: file-4KiB-c32 file-4KiB-c256 file-64KiB-c32 file-1MiB-c32 plaintext-c32 https-file-4KiB-c32
# https-plaintext-c32 (any file-{4KiB,64KiB,1MiB,32MiB}-cN or plaintext-cN, with or without https-, works).
#
# Writes perf/results/ab-NAME.md (NAME: SHORT-A-SHORT-B-SCENARIO) and its raw files (ab-NAME.csv, -rounds.csv,
# -meta.txt, -commands.txt; `python3 perf/ab_report.py --name NAME` redraws the .md). perf/README.md: the method
# and the verdict.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"
AB_CACHE=$CACHE_DIR/ab                # one published build per commit: ab/SHORT-SHA/publish

readonly AB_PORT=18481                # one server at a time, so both builds use the same port (and wrk command)
readonly WRK_TIMEOUT=30s
readonly WARMUP_WINDOW_S=5            # the warm-up is logged as windows of this length (their requests/s)
readonly PAUSE_BEFORE_MEASURING_S=0.3 # lets the warm-up's connections close before the measured run
declare -A FILE_SIZE=([4KiB]=4096 [64KiB]=65536 [1MiB]=1048576 [32MiB]=33554432)

ARGS="$*"             # as given, for the results
ROUNDS=6              # round pairs: A B, B A, A B, ... (ABBA: each build goes first equally often)
WARMUP_S=30           # a .NET server pinned to one core needs ~30 s of load to reach steady speed
DURATION_S=10
SCENARIO="file-4KiB-c32"
NAME=""
SMOKE=0
WAIT_QUIET_S=0
declare -A REF=() TRANSPORT=([A]=splice [B]=splice)
declare -A SHA=() SHORT=() SRC_COMMIT=() BIN=() KEY=()

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

positive_integer() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a whole number of at least 1, not '$2'"; }
transport_name() { [[ $2 == splice || $2 == sockets ]] || die "$1 must be splice or sockets, not '$2'"; echo "$2"; }

parse_args() {
  local positional=()
  while (($#)); do
    case "$1" in
      --rounds) ROUNDS=${2:?--rounds needs a number}; positive_integer --rounds "$ROUNDS"; shift ;;
      --warmup) WARMUP_S=${2:?--warmup needs seconds}; positive_integer --warmup "$WARMUP_S"; shift ;;
      --duration) DURATION_S=${2:?--duration needs seconds}; positive_integer --duration "$DURATION_S"; shift ;;
      --transport) TRANSPORT[A]=$(transport_name --transport "${2:-}"); TRANSPORT[B]=${TRANSPORT[A]}; shift ;;
      --transport-a) TRANSPORT[A]=$(transport_name --transport-a "${2:-}"); shift ;;
      --transport-b) TRANSPORT[B]=$(transport_name --transport-b "${2:-}"); shift ;;
      --name) NAME=${2:?--name needs a name}; shift ;;
      --wait-quiet) WAIT_QUIET_S=${2:?--wait-quiet needs seconds}; shift ;;
      --smoke) SMOKE=1 ;;
      -h|--help) usage; exit 0 ;;
      -*) die "unknown option '$1' (see --help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  ((${#positional[@]} >= 2 && ${#positional[@]} <= 3)) || { usage >&2; exit 2; }
  REF[A]=${positional[0]}; REF[B]=${positional[1]}
  [[ ${#positional[@]} == 3 ]] && SCENARIO=${positional[2]}
  # Checks the script, not the builds: nothing is steady after 2 s (the results say so).
  if ((SMOKE)); then ROUNDS=1; WARMUP_S=2; DURATION_S=2; fi
  [[ -z $NAME || $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may use letters, digits, '.', '_' and '-' only"

  # [https-]file-<size>-c<connections> or [https-]plaintext-c<connections>
  local rest=$SCENARIO
  URL_SCHEME=http
  if [[ $rest == https-* ]]; then URL_SCHEME=https; rest=${rest#https-}; fi
  if [[ $rest =~ ^file-(4KiB|64KiB|1MiB|32MiB)-c([1-9][0-9]*)$ ]]; then
    FILE=${BASH_REMATCH[1]}; CONNS=${BASH_REMATCH[2]}; FILES=("$FILE")
  elif [[ $rest =~ ^plaintext-c([1-9][0-9]*)$ ]]; then
    FILE=plaintext; CONNS=${BASH_REMATCH[1]}; FILES=()
  else
    die "unknown scenario '$SCENARIO': [https-]file-{4KiB,64KiB,1MiB,32MiB}-cN or [https-]plaintext-cN, e.g. file-4KiB-c32"
  fi
}

declare -A PORT=()
CSV=""; ROUNDS_CSV=""
LOCK_FD=""

# Builds samples/StaticFileServer at build <A|B>'s ref into perf/.cache/ab/SHORT-SHA/publish, unless a
# build of that commit is already there.
build_ref() {
  local b=$1 sha short dir
  sha=$(git -C "$REPO_DIR" rev-parse --verify -q "${REF[$b]}^{commit}") || die "'${REF[$b]}' (build $b) is not a commit"
  short=$(git -C "$REPO_DIR" rev-parse --short "$sha")
  SHA[$b]=$sha; SHORT[$b]=$short
  SRC_COMMIT[$b]=$(git -C "$REPO_DIR" log -1 --format=%h "$sha" -- src)   # the last commit that changed src/
  dir=$AB_CACHE/$short
  BIN[$b]=$dir/publish/StaticFileServer
  echo "build $b ($short): git archive $sha | tar -x -C TREE; dotnet publish TREE/samples/StaticFileServer -c Release -o $dir/publish -nologo -v q --disable-build-servers" >>"$COMMANDS_FILE"
  if [[ -x ${BIN[$b]} && $(cat "$dir/publish/.commit" 2>/dev/null) == "$sha" ]]; then
    log "build $b: $short (${REF[$b]}), cached in perf/.cache/ab/$short"
    return
  fi
  log "build $b: $short (${REF[$b]}): git archive, dotnet publish -c Release (once; cached in perf/.cache/ab/$short)"
  rm -rf "$dir"
  mkdir -p "$dir/tree"
  git -C "$REPO_DIR" archive "$sha" | tar -x -C "$dir/tree" || die "git archive $short into $dir/tree failed"
  dotnet publish "$dir/tree/samples/StaticFileServer" -c Release -o "$dir/publish" -nologo -v q --disable-build-servers \
    >"$dir/build.log" 2>&1 \
    || { tail -n 30 "$dir/build.log" >&2; die "dotnet publish of samples/StaticFileServer at $short failed (whole log: $dir/build.log)"; }
  [[ -x ${BIN[$b]} ]] || die "published $short, but $dir/publish/StaticFileServer is missing"
  echo "$sha" >"$dir/publish/.commit"
  rm -rf "$dir/tree"
}

start_build() {
  SAMPLE_BIN=${BIN[$1]}
  start_server_process "${KEY[$1]}" "$(dotnet_server_command "${TRANSPORT[$1]}" "$AB_PORT")" "$1 (${SHORT[$1]})"
}

# The scenario's own load for WARMUP_S seconds, in windows of up to WARMUP_WINDOW_S; sets WARMUP_RATES
# (requests/s of each window), so the results show whether a build was still speeding up.
warm_up_scenario() {
  local name=$1 out=$TMP_DIR/warmup.out left=$WARMUP_S window rates=()
  while ((left > 0)); do
    window=$((left < WARMUP_WINDOW_S ? left : WARMUP_WINDOW_S))
    local args=(wrk -t1 -c"$CONNS" -d"${window}s" --timeout "$WRK_TIMEOUT" -s "$PERF_DIR/report.lua"
                "$(server_url "$name")/$(url_path "$FILE")")
    grep -qF "client warm-up" "$COMMANDS_FILE" \
      || echo "client warm-up, ${WARMUP_S} s in runs of up to ${WARMUP_WINDOW_S} s: taskset -c $CLIENT_CORE ${args[*]}" >>"$COMMANDS_FILE"
    require_alive "$name" "during its warm-up"
    run_client "$out" "${args[@]}" || { cat "$out" >&2; die "warm-up of '$name' failed"; }
    local -A r=(); read_wrk_result "$out" r "the warm-up of '$name'"
    ((r[status] == 0)) || die "'$name' answered ${r[status]} requests with a non-2xx status during its warm-up"
    rates+=("$(awk -v n="${r[requests]}" -v us="${r[duration_us]}" 'BEGIN {printf "%.0f", (us > 0 ? n * 1e6 / us : 0)}')")
    left=$((left - window))
  done
  WARMUP_RATES="${rates[*]}"
}

# One round of one build: a fresh server, warmed, measured, stopped.
measure_build() {
  local b=$1 round=$2 name=${KEY[$1]} load
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "round $round/$ROUNDS, $b (${SHORT[$b]}, ${TRANSPORT[$b]}): load average $load"
  start_build "$b"
  wait_for_port "$name"
  check_server "$name"
  warm_up_scenario "$name"
  log "  $name warm-up (${WARMUP_S} s): $WARMUP_RATES req/s"
  sleep "$PAUSE_BEFORE_MEASURING_S"
  plain_pass "$name" "$SCENARIO" "$FILE" "$CONNS" "round$round"
  [[ -n $(tail -n1 "$CSV" | cut -d, -f13) ]] \
    || log "  note: no GET /perf/threadpool at ${SHORT[$b]}: thread-pool work items are n/a for build $b"
  stop_server "$name"
  echo "$round,$b,$name,$load,$WARMUP_RATES" >>"$ROUNDS_CSV"
}

write_metadata() {
  local b
  {
    common_metadata
    echo "perf=$(perf --version)"
    echo "hardware_counters=$HW_COUNTERS"
    for b in A B; do
      printf '%s\n' "ref_$b=${REF[$b]}" "sha_$b=${SHA[$b]}" "short_$b=${SHORT[$b]}" "src_commit_$b=${SRC_COMMIT[$b]}" \
        "transport_$b=${TRANSPORT[$b]}" "server_$b=${KEY[$b]}"
    done
    printf '%s\n' "scenario=$SCENARIO" "file=$FILE" "connections=$CONNS" "scheme=$URL_SCHEME" "port=$AB_PORT" \
      "rounds=$ROUNDS" "warmup_s=$WARMUP_S" "duration_s=$DURATION_S" "smoke=$SMOKE" "script_commit=$(describe_commit)"
  } >"$RESULTS_DIR/ab-$NAME-meta.txt"
}

main() {
  parse_args "$@"
  begin_run ab
  CSV=$TMP_DIR/ab.csv; ROUNDS_CSV=$TMP_DIR/rounds.csv
  echo "$PLAIN_PASS_CSV_HEADER" >"$CSV"
  echo "round,build,server,loadavg_1min,warmup_requests_per_s" >"$ROUNDS_CSV"
  mkdir -p "$RESULTS_DIR" "$AB_CACHE"

  install_packages_for wrk=wrk perf=linux-perf curl=curl python3=python3 taskset=util-linux
  ulimit -n 65536 2>/dev/null || true
  detect_hardware_counters
  build_ref A
  build_ref B
  KEY[A]=${TRANSPORT[A]}-A; KEY[B]=${TRANSPORT[B]}-B   # server names start with the transport (lib.sh is_dotnet_server)
  PORT[${KEY[A]}]=$AB_PORT; PORT[${KEY[B]}]=$AB_PORT
  if [[ -z $NAME ]]; then
    NAME=${SHORT[A]}-${SHORT[B]}-$SCENARIO
    [[ ${TRANSPORT[A]} == splice && ${TRANSPORT[B]} == splice ]] || NAME+=-${TRANSPORT[A]}-${TRANSPORT[B]}
    ((SMOKE)) && NAME=smoke-$NAME
  fi
  make_files
  [[ $FILE == plaintext ]] || taskset -c $CLIENT_CORE cat "$FILES_DIR/$FILE.bin" >/dev/null   # in the page cache
  take_perf_lock
  wait_for_quiet
  log "A = ${SHORT[A]} (${TRANSPORT[A]}), B = ${SHORT[B]} (${TRANSPORT[B]}); $SCENARIO; $ROUNDS round pair(s) of ${WARMUP_S} s warm-up + ${DURATION_S} s measured"

  local round b order
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(A B); else order=(B A); fi
    for b in "${order[@]}"; do measure_build "$b" "$round"; done
  done

  write_metadata
  cp "$CSV" "$RESULTS_DIR/ab-$NAME.csv"
  cp "$ROUNDS_CSV" "$RESULTS_DIR/ab-$NAME-rounds.csv"
  cp "$COMMANDS_FILE" "$RESULTS_DIR/ab-$NAME-commands.txt"
  python3 "$PERF_DIR/ab_report.py" --name "$NAME"
  log "done in $((SECONDS - STARTED))s: perf/results/ab-$NAME.md"
}

main "$@"
