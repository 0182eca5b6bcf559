-- wrk script of `make bench`: GET /<code> for codes picked uniformly at
-- random from a file of codes, one per line (the first script argument).
-- Requests are formatted once in init(), so request() is a table lookup.
-- The harness appends result.lua (thread ids, the WRK_RESULT line).

local reqs = {}
local n = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("redirect.lua: give the codes file after --")
  end
  for line in io.lines(path) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("GET", "/" .. line)
    end
  end
  if n == 0 then
    error("redirect.lua: no codes in " .. path)
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
  return reqs[math.random(n)]
end
