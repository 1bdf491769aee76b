#!/usr/bin/env bash
# perf/ab.sh — does a change cost less? The sample at two commits, alternated round by round on the same pinned cores,
# with the counts per response that do not depend on how busy the machine is next to the CPU time that does
# (method, scenarios and verdict: perf/README.md, "ab.sh").
#   perf/ab.sh REF-A REF-B [SCENARIO] [--rounds N] [--warmup S] [--duration S] [--name NAME] [--wait-quiet S] [--smoke]
#   perf/ab.sh REF-A REF-B [SCENARIO] [--transport-a splice|sockets] [--transport-b splice|sockets]
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
DURATION_S=10 SCENARIO=file-4KiB-c32 NAME="" SMOKE=0 WAIT_QUIET_S=0   # the other options' defaults
declare -A REF=() TRANSPORT=([A]=splice [B]=splice) SHA=() SHORT=() SRC_COMMIT=() BIN=() KEY=() PORT=()

transport_name() { [[ $2 == splice || $2 == sockets ]] || die "$1 must be splice or sockets, not '$2'"; echo "$2"; }

parse_args() {
  local positional=()
  while (($#)); do
    case "$1" in
      --rounds) ROUNDS=$(positive_integer --rounds "${2:-}"); shift ;;
      --warmup) WARMUP_S=$(positive_integer --warmup "${2:-}"); shift ;;
      --duration) DURATION_S=$(positive_integer --duration "${2:-}"); shift ;;
      --transport-a) TRANSPORT[A]=$(transport_name --transport-a "${2:-}"); shift ;;
      --transport-b) TRANSPORT[B]=$(transport_name --transport-b "${2:-}"); shift ;;
      --name) NAME=${2:?--name needs a name}; shift ;;
      --wait-quiet) WAIT_QUIET_S=$(positive_integer --wait-quiet "${2:-}"); shift ;;
      --smoke) SMOKE=1 ;;
      -h|--help) usage 0 ;;
      -*) die "unknown option '$1' (see --help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  ((${#positional[@]} >= 2 && ${#positional[@]} <= 3)) || usage
  REF[A]=${positional[0]}; REF[B]=${positional[1]}; SCENARIO=${positional[2]:-$SCENARIO}
  # Checks the script, not the builds: nothing is steady after 2 s (the results say so).
  if ((SMOKE)); then ROUNDS=1; WARMUP_S=2; DURATION_S=2; fi
  [[ -z $NAME || $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may use letters, digits, '.', '_' and '-' only"
  # [https-]file-<size>-c<connections> or [https-]plaintext-c<connections>
  URL_SCHEME=http
  [[ $SCENARIO != https-* ]] || URL_SCHEME=https
  if [[ ${SCENARIO#https-} =~ ^file-(4KiB|64KiB|1MiB|32MiB)-c([1-9][0-9]*)$ ]]; then
    FILE=${BASH_REMATCH[1]}; CONNS=${BASH_REMATCH[2]}; FILES=("$FILE")
  elif [[ ${SCENARIO#https-} =~ ^plaintext-c([1-9][0-9]*)$ ]]; then
    FILE=plaintext; CONNS=${BASH_REMATCH[1]}; FILES=()
  else
    die "unknown scenario '$SCENARIO': [https-]file-{4KiB,64KiB,1MiB,32MiB}-cN or [https-]plaintext-cN, e.g. file-4KiB-c32"
  fi
}

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

# One round of one build: a fresh server, warmed with the scenario's own load for WARMUP_S in windows of up to
# WARMUP_WINDOW_S (their requests/s go into the rounds file, so the results show whether a build was still speeding
# up), measured, stopped.
measure_build() {
  local b=$1 round=$2 name=${KEY[$1]} load left=$WARMUP_S window rates=() wrk requests duration_us
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "round $round/$ROUNDS, $b (${SHORT[$b]}, ${TRANSPORT[$b]}): load average $load"
  SAMPLE_BIN=${BIN[$b]}
  start_server_process "$name" "$(dotnet_server_command "${TRANSPORT[$b]}" "$AB_PORT")" "$b (${SHORT[$b]})"
  wait_for_port "$name"
  check_server "$name"
  while ((left > 0)); do
    window=$((left < WARMUP_WINDOW_S ? left : WARMUP_WINDOW_S))
    wrk=$(DURATION_S=$window run_wrk "$name" "warm-up" "$FILE" "$CONNS" warm-up)
    read -r requests _ duration_us _ <<<"$wrk"
    rates+=("$((requests * 1000000 / duration_us))")
    left=$((left - window))
  done
  log "  $name warm-up (${WARMUP_S} s): ${rates[*]} req/s"
  sleep "$PAUSE_BEFORE_MEASURING_S"
  plain_pass "$name" "$SCENARIO" "$FILE" "$CONNS" "round$round"
  [[ -n $(tail -n1 "$CSV" | cut -d, -f13) ]] \
    || log "  note: no GET /perf/threadpool at ${SHORT[$b]}: thread-pool work items are n/a for build $b"
  stop_server "$name"
  echo "$round,$b,$name,$load,${rates[*]}" >>"$ROUNDS_CSV"
}

main() {
  parse_args "$@"
  begin_run ab
  CSV=$TMP_DIR/ab.csv ROUNDS_CSV=$TMP_DIR/rounds.csv
  echo "$PLAIN_PASS_CSV_HEADER" >"$CSV"
  echo "round,build,server,loadavg_1min,warmup_requests_per_s" >"$ROUNDS_CSV"
  mkdir -p "$AB_CACHE"
  install_packages_for wrk=wrk perf=linux-perf curl=curl python3=python3 taskset=util-linux
  raise_fd_limit 65536
  detect_hardware_counters
  build_ref A
  build_ref B
  KEY[A]=${TRANSPORT[A]}-A; KEY[B]=${TRANSPORT[B]}-B   # server names start with the transport (lib.sh is_dotnet_server)
  PORT[${KEY[A]}]=$AB_PORT; PORT[${KEY[B]}]=$AB_PORT
  if [[ -z $NAME ]]; then
    NAME=${SHORT[A]}-${SHORT[B]}-$SCENARIO
    [[ ${TRANSPORT[A]} == splice && ${TRANSPORT[B]} == splice ]] || NAME+=-${TRANSPORT[A]}-${TRANSPORT[B]}
    ((!SMOKE)) || NAME=smoke-$NAME
  fi
  make_files
  [[ $FILE == plaintext ]] || taskset -c $CLIENT_CORE cat "$FILES_DIR/$FILE.bin" >/dev/null   # in the page cache
  take_perf_lock
  wait_for_quiet
  log "A = ${SHORT[A]} (${TRANSPORT[A]}), B = ${SHORT[B]} (${TRANSPORT[B]}); $SCENARIO; $ROUNDS round pair(s) of ${WARMUP_S} s warm-up + ${DURATION_S} s measured"
  local round b order
  for ((round = 1; round <= ROUNDS; round++)); do
    order=(A B); ((round % 2)) || order=(B A)
    for b in "${order[@]}"; do measure_build "$b" "$round"; done
  done
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
  cp "$CSV" "$RESULTS_DIR/ab-$NAME.csv"
  cp "$ROUNDS_CSV" "$RESULTS_DIR/ab-$NAME-rounds.csv"
  cp "$COMMANDS_FILE" "$RESULTS_DIR/ab-$NAME-commands.txt"
  python3 "$PERF_DIR/ab_report.py" --name "$NAME"
  log "done in $((SECONDS - STARTED))s: perf/results/ab-$NAME.md"
}

main "$@"
