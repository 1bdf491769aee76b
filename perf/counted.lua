-- wrk script for perf/profile.sh: report.lua's WRK_RESULT line, plus how many requests wrk wrote
-- (WRK_SENT sent=N). profile.sh divides the server's counts by this: when wrk stops, up to one request per
-- connection has been sent and handled by the server but not counted as completed, which with 256
-- connections and a slow, straced server is several percent of a run's responses.
local threads = {}
local request_bytes

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  request_bytes = wrk.format()
  sent = 0            -- global: done() reads it from each thread with thread:get
end

request = function()
  sent = sent + 1
  return request_bytes
end

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
local report_done = done

done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("sent") end
  io.write(string.format("WRK_SENT sent=%d\n", total))
  report_done(summary, latency, requests)
end
