-- wrk script for perf/run.sh's warm-up windows: requests cycle through a fixed mix of paths (small files and
-- /plaintext, whose cost is mostly the server's own code, and a 64 KiB file for the large-file path), so
-- every window exercises the same code and their requests/s can be compared. No 1 MiB file: its time is
-- mostly the kernel's copy, which would hide how far the server's code has been compiled.
local paths = { "/4KiB.bin", "/plaintext", "/64KiB.bin", "/4KiB.bin", "/plaintext" }
local requests = {}
local next_index = 0

function init(args)
  for i, path in ipairs(paths) do requests[i] = wrk.format("GET", path) end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
