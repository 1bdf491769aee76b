-- wrk script for perf/run.sh's warm-up windows: requests cycle through a fixed mix of paths (small and
-- large files, /plaintext), so every window exercises the same code and their requests/s can be compared.
local paths = { "/4KiB.bin", "/plaintext", "/64KiB.bin", "/4KiB.bin", "/plaintext", "/1MiB.bin" }
local requests = {}
local next_index = 0

function init(args)
  for i, path in ipairs(paths) do requests[i] = wrk.format("GET", path) end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
