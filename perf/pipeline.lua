-- HTTP/1.1 pipelining for wrk, with report.lua's WRK_RESULT: each write carries DEPTH requests for the URL's path
-- (built once), and wrk waits for DEPTH responses before writing the next batch.
--   wrk -s perf/pipeline.lua http://127.0.0.1:8080/plaintext -- 16
local DEFAULT_DEPTH = 16  -- the depth TechEmpower's plaintext test uses
local batch

function init(args)
  batch = string.rep(wrk.format(), tonumber(args[1]) or DEFAULT_DEPTH)
end

function request() return batch end

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")   -- the report.lua beside this file
