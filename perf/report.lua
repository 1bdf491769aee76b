-- wrk's done() hook, used directly (wrk -s perf/report.lua) and loaded by pipeline.lua and counted.lua: wrk's
-- totals as the one line perf/lib.sh's read_wrk_result parses:
--   WRK_RESULT requests=… bytes=… duration_us=… p99_us=… connect=… read=… write=… status=… timeout=… p50_us=… max_us=…
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d bytes=%d duration_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d max_us=%d\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(99.0),
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50.0), latency.max))
end
