-- wrk script for perf/lib.sh's run_wrk (profile.sh, ab.sh): report.lua's WRK_RESULT, plus WRK_SENT sent=N, the
-- requests wrk wrote, which the servers' counts are divided by: when wrk stops, up to one request per connection
-- has been handled but not counted as completed (with 256 connections and a slow, straced server, several percent).
local threads = {}
local request_bytes

function setup(thread) table.insert(threads, thread) end

function init(args)
  request_bytes = wrk.format()
  sent = 0            -- global: done() reads it from each thread with thread:get
end

function request()
  sent = sent + 1
  return request_bytes
end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")   -- the report.lua beside this file
local report_done = done

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("sent") end
  io.write(string.format("WRK_SENT sent=%d\n", total))
  report_done(summary, latency, requests)
end
