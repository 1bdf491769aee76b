#!/usr/bin/env bash
# perf/capture-coalescing.sh — shows with a loopback capture that, for a small file, the splice server
# sends the response headers and the start of the file in ONE TCP segment (headers with MSG_MORE, then
# sendfile), instead of a header segment followed by a body segment.
#
#   perf/capture-coalescing.sh
#
# Starts the sample with --transport splice, captures `tcp port <port>` on lo with tshark while curl
# fetches a 1000-byte file, prints the server->client segments, asserts that the first data segment holds
# "HTTP/1.1 200" and the file's first bytes (payload >= header length + file size), prints PASS or FAIL,
# and writes the result to perf/results/coalescing.md. Exit status 0 on PASS, 1 on FAIL.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"
REPO_DIR=$(dirname "$PERF_DIR")
SAMPLE_PROJECT=$REPO_DIR/samples/StaticFileServer
SAMPLE_BUILD_DIR=$SAMPLE_PROJECT/bin/Release/net10.0
SAMPLE_COPY_DIR=$PERF_DIR/.cache/coalescing-sample   # the server runs from a copy: other work may rebuild bin/
SAMPLE_BIN=$SAMPLE_COPY_DIR/StaticFileServer
RESULT_MD=$PERF_DIR/results/coalescing.md

readonly PORT=18090                   # apart from run.sh's 18081-18084, so both can run at once
readonly FILE_SIZE=1000               # small enough that headers + file fit in one loopback segment
readonly FILE_NAME=small-1000.bin
readonly STARTUP_TIMEOUT_S=30         # the server must answer by then
readonly CAPTURE_START_TIMEOUT_S=15   # tshark must report "Capturing on" by then
readonly CAPTURE_TAIL_S=1             # keep capturing this long after curl, to see the last ACKs and FINs
readonly STOP_TIMEOUT_S=5             # after TERM/INT, a process gets this long before KILL

TMP_DIR=""
SERVER_PID=""
TSHARK_PID=""

install_tshark() {
  command -v tshark >/dev/null && return
  log "installing tshark"
  export DEBIAN_FRONTEND=noninteractive
  # "Should non-superusers be able to capture packets?" -> no (we capture as root).
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q >/dev/null
  apt-get install -y -q tshark >/dev/null
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [[ -n $TSHARK_PID ]] && stop_pid "$TSHARK_PID" INT
  [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
  [[ -n $TMP_DIR ]] && rm -rf "$TMP_DIR"
  exit "$status"
}

start_server() {
  mkdir -p "$TMP_DIR/root"
  head -c "$FILE_SIZE" /dev/urandom >"$TMP_DIR/root/$FILE_NAME"
  SERVER_CMD="$SAMPLE_BIN --root $TMP_DIR/root --urls http://127.0.0.1:$PORT --transport splice"
  log "starting: $SERVER_CMD"
  $SERVER_CMD >"$TMP_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + STARTUP_TIMEOUT_S))
  until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/plaintext"; do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP_DIR/server.log" >&2; die "the splice server exited while starting"; }
    ((SECONDS < deadline)) || die "the splice server did not answer on port $PORT within ${STARTUP_TIMEOUT_S}s"
    sleep 0.2
  done
}

start_capture() {
  CAPTURE_CMD="tshark -i lo -f 'tcp port $PORT' -w $TMP_DIR/capture.pcap"
  log "starting: $CAPTURE_CMD"
  tshark -i lo -f "tcp port $PORT" -w "$TMP_DIR/capture.pcap" >"$TMP_DIR/tshark.log" 2>&1 &
  TSHARK_PID=$!
  local deadline=$((SECONDS + CAPTURE_START_TIMEOUT_S))
  until grep -q "Capturing on" "$TMP_DIR/tshark.log"; do
    kill -0 "$TSHARK_PID" 2>/dev/null || { cat "$TMP_DIR/tshark.log" >&2; die "tshark exited before capturing"; }
    ((SECONDS < deadline)) || die "tshark did not start capturing within ${CAPTURE_START_TIMEOUT_S}s"
    sleep 0.2
  done
}

fetch_file() {
  CURL_CMD="curl -s --http1.1 --max-time 10 -o $TMP_DIR/got.bin -w '%{size_header}' http://127.0.0.1:$PORT/$FILE_NAME"
  log "fetching: $CURL_CMD"
  HEADER_SIZE=$(curl -s --http1.1 --max-time 10 -o "$TMP_DIR/got.bin" -w '%{size_header}' \
                  "http://127.0.0.1:$PORT/$FILE_NAME") || die "curl failed"
  cmp -s "$TMP_DIR/got.bin" "$TMP_DIR/root/$FILE_NAME" || die "the downloaded file differs from the served file"
  sleep "$CAPTURE_TAIL_S"
  stop_pid "$TSHARK_PID" INT
  TSHARK_PID=""
}

# Server->client segments as "frame flags payload_length payload_hex".
server_segments() {
  tshark -r "$TMP_DIR/capture.pcap" -Y "tcp.srcport == $PORT" \
    -T fields -E separator=' ' -e frame.number -e tcp.flags.str -e tcp.len -e tcp.payload 2>/dev/null
}

# Prints the segment table and the verdict as markdown; exit status 0 on PASS.
analyse() {
  server_segments >"$TMP_DIR/segments.txt"
  python3 - "$TMP_DIR/segments.txt" "$TMP_DIR/root/$FILE_NAME" "$HEADER_SIZE" <<'EOF'
import sys
segments_path, file_path, header_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = open(file_path, "rb").read()
print("| frame | TCP flags | payload bytes | payload starts with |")
print("|---|---|---|---|")
first_data = None
for line in open(segments_path):
    parts = line.split()
    if len(parts) < 3:
        continue
    frame, flags, length = parts[0], parts[1], int(parts[2])
    payload = bytes.fromhex(parts[3]) if len(parts) > 3 else b""
    start = payload[:16].decode("latin-1").encode("unicode_escape").decode() if payload else ""
    print(f"| {frame} | {flags} | {length} | `{start}` |")
    if first_data is None and length > 0:
        first_data = payload
print()
expected = header_size + len(body)
if first_data is None:
    print("**FAIL**: the server sent no data segment.")
    sys.exit(1)
has_status = first_data.startswith(b"HTTP/1.1 200")
header_end = first_data.find(b"\r\n\r\n")
has_body_start = header_end >= 0 and first_data[header_end + 4:header_end + 4 + 64] == body[:64]
big_enough = len(first_data) >= expected
print(f"First data segment: {len(first_data)} payload bytes; response headers {header_size} bytes "
      f"(curl's size_header) + file {len(body)} bytes = {expected}.")
print(f"- starts with `HTTP/1.1 200`: {'yes' if has_status else 'no'}")
print(f"- the file's first 64 bytes follow the blank line that ends the headers: {'yes' if has_body_start else 'no'}")
print(f"- payload length >= headers + file: {'yes' if big_enough else 'no'}")
print()
if has_status and has_body_start and big_enough:
    print("**PASS**: headers and the whole file left the server in one TCP segment.")
    sys.exit(0)
print("**FAIL**: headers and the start of the file did not leave in one TCP segment.")
sys.exit(1)
EOF
}

write_result() {
  local verdict=$1 analysis=$2
  mkdir -p "$(dirname "$RESULT_MD")"
  {
    echo "# Header and file coalescing on the splice transport — $verdict"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILD_COMMIT; \`src/\` as of $SRC_COMMIT"
    echo "- Kernel: $(uname -sr); $(tshark --version 2>/dev/null | head -n1)"
    echo "- Written by \`perf/capture-coalescing.sh\`. Commands (temporary folder shown as \$TMP):"
    echo
    echo '```'
    echo "$SERVER_CMD" | sed "s|$TMP_DIR|\$TMP|g"
    echo "$CAPTURE_CMD" | sed "s|$TMP_DIR|\$TMP|g"
    echo "$CURL_CMD" | sed "s|$TMP_DIR|\$TMP|g"
    echo '```'
    echo
    echo "Server→client segments of the one connection (port $PORT → curl):"
    echo
    echo "$analysis"
  } >"$RESULT_MD"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  TMP_DIR=$(mktemp -d /tmp/splice-coalescing.XXXXXX)
  install_tshark
  mkdir -p "$(dirname "$SAMPLE_COPY_DIR")"
  build_sample
  start_server
  start_capture
  fetch_file

  local analysis verdict=PASS status=0
  analysis=$(analyse) || { verdict=FAIL; status=1; }
  echo "$analysis"
  write_result "$verdict" "$analysis"
  echo
  echo "$verdict (written to perf/results/coalescing.md)"
  return "$status"
}

main "$@"
