-- HTTP/1.1 pipelining for wrk: each write carries DEPTH requests for the URL's path, built once in
-- init() with wrk.format(); wrk then waits for DEPTH responses before writing the next batch.
--   wrk -s perf/pipeline.lua http://127.0.0.1:8080/plaintext -- 16
local DEFAULT_DEPTH = 16  -- the depth TechEmpower's plaintext test uses

local batch

init = function(args)
  local depth = tonumber(args[1]) or DEFAULT_DEPTH
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  batch = table.concat(requests)
end

request = function()
  return batch
end

-- The shared done() that prints WRK_RESULT, from report.lua next to this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
