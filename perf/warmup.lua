-- wrk script for the warm-up windows (perf/lib.sh's warm_up): requests cycle through a fixed mix, so windows compare:
-- small files and /plaintext (mostly the server's own code) and 64 KiB for the large-file path. No 1 MiB file: its
-- time is mostly the kernel's copy, which would hide how far the server's code has been compiled.
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
