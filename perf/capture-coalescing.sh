#!/usr/bin/env bash
# perf/capture-coalescing.sh — shows with a loopback capture that, for a small file, the splice server sends the
# response headers and the start of the file in ONE TCP segment (headers with MSG_MORE, then sendfile), instead of
# a header segment followed by a body segment.
#
#   perf/capture-coalescing.sh        results: perf/results/coalescing.md; exit status 0 on PASS, 1 on FAIL
#
# Captures the sample's port on lo with tshark while curl fetches a 1000-byte file, and checks that the first
# server->client data segment holds "HTTP/1.1 200" and the file's first bytes (payload >= headers + file).
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"

declare -A PORT=([splice]=18090)      # apart from run.sh's 18081-18084, so both can run at once
readonly BODY_SIZE=1000               # small enough that headers + file fit in one loopback segment
readonly FILE_NAME=small-1000.bin
readonly CAPTURE_START_TIMEOUT_S=15   # tshark must report "Capturing on" by then
readonly CAPTURE_TAIL_S=1             # keep capturing this long after curl, to see the last ACKs and FINs

# Serves one random file with the sample, captures its port with tshark (a probe: lib.sh's cleanup stops it with
# INT, so that it writes its capture out) and fetches the file with curl.
capture() {
  mkdir -p "$TMP_DIR/root"
  head -c "$BODY_SIZE" /dev/urandom >"$TMP_DIR/root/$FILE_NAME"
  SERVER_CMD="$SAMPLE_BIN --root $TMP_DIR/root --urls $(server_url splice) --transport splice"
  CAPTURE_CMD="tshark -i lo -f 'tcp port ${PORT[splice]}' -w $TMP_DIR/capture.pcap"
  CURL_CMD="curl -s --http1.1 --max-time 10 -o $TMP_DIR/got.bin -w '%{size_header}' $(server_url splice)/$FILE_NAME"
  log "starting: $SERVER_CMD"
  start_server_process splice "$SERVER_CMD"
  wait_for_port splice
  log "starting: $CAPTURE_CMD"
  eval "start_probe $CAPTURE_CMD"
  local deadline=$((SECONDS + CAPTURE_START_TIMEOUT_S))
  until grep -q "Capturing on" "$TMP_DIR/probe.err"; do
    kill -0 "$PROBE_PID" 2>/dev/null || { cat "$TMP_DIR/probe.err" >&2; die "tshark exited before capturing"; }
    ((SECONDS < deadline)) || die "tshark did not start capturing within ${CAPTURE_START_TIMEOUT_S}s"
    sleep 0.2
  done
  log "fetching: $CURL_CMD"
  HEADER_SIZE=$(eval "$CURL_CMD") || die "curl failed"
  cmp -s "$TMP_DIR/got.bin" "$TMP_DIR/root/$FILE_NAME" || die "the downloaded file differs from the served file"
  sleep "$CAPTURE_TAIL_S"
  stop_probe
}

# Prints the server->client segments and the verdict as markdown; exit status 0 on PASS.
analyse() {
  tshark -r "$TMP_DIR/capture.pcap" -Y "tcp.srcport == ${PORT[splice]}" \
    -T fields -E separator=' ' -e frame.number -e tcp.flags.str -e tcp.len -e tcp.payload 2>/dev/null >"$TMP_DIR/segments.txt"
  python3 - "$TMP_DIR/segments.txt" "$TMP_DIR/root/$FILE_NAME" "$HEADER_SIZE" <<'EOF'
import sys
segments, body, header_size = open(sys.argv[1]).read().splitlines(), open(sys.argv[2], "rb").read(), int(sys.argv[3])
print("| frame | TCP flags | payload bytes | payload starts with |\n|---|---|---|---|")
first = None   # the first data segment's payload
for frame, flags, length, *payload in (line.split() for line in segments if len(line.split()) >= 3):
    payload = bytes.fromhex(payload[0]) if payload else b""
    print(f"| {frame} | {flags} | {length} | `{payload[:16].decode('latin-1').encode('unicode_escape').decode()}` |")
    if first is None and int(length) > 0:
        first = payload
if first is None:
    print("\n**FAIL**: the server sent no data segment.")
    sys.exit(1)
expected, end = header_size + len(body), first.find(b"\r\n\r\n")
checks = {"starts with `HTTP/1.1 200`": first.startswith(b"HTTP/1.1 200"),
          "the file's first 64 bytes follow the blank line that ends the headers": end >= 0 and first[end + 4:end + 68] == body[:64],
          "payload length >= headers + file": len(first) >= expected}
print(f"\nFirst data segment: {len(first)} payload bytes; response headers {header_size} bytes (curl's size_header) + file {len(body)} bytes = {expected}.")
print("\n".join(f"- {what}: {'yes' if ok else 'no'}" for what, ok in checks.items()))
passed = all(checks.values())
print("\n**PASS**: headers and the whole file left the server in one TCP segment." if passed
      else "\n**FAIL**: headers and the start of the file did not leave in one TCP segment.")
sys.exit(0 if passed else 1)
EOF
}

main() {
  begin_run coalescing
  # "Should non-superusers be able to capture packets?" -> no (we capture as root).
  command -v tshark >/dev/null || echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  install_packages_for tshark=tshark curl=curl
  build_sample
  capture
  local analysis verdict=PASS status=0
  analysis=$(analyse) || { verdict=FAIL; status=1; }
  echo "$analysis"
  cat >"$RESULTS_DIR/coalescing.md" <<EOF
# Header and file coalescing on the splice transport — $verdict

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILD_COMMIT; \`src/\` as of $SRC_COMMIT
- Kernel: $(uname -sr); $(tshark --version 2>/dev/null | head -n1)
- Written by \`perf/capture-coalescing.sh\`. Commands (temporary folder shown as \$TMP):

\`\`\`
$(printf '%s\n' "$SERVER_CMD" "$CAPTURE_CMD" "$CURL_CMD" | sed "s|$TMP_DIR|\$TMP|g")
\`\`\`

Server→client segments of the one connection (port ${PORT[splice]} → curl):

$analysis
EOF
  printf '\n%s (written to perf/results/coalescing.md)\n' "$verdict"
  return "$status"
}

main "$@"
