-- wrk script of `make bench`: GET /<code> for codes picked uniformly at
-- random from a file of codes, one per line (the first script argument).
-- Requests are formatted once in init(), so request() is a table lookup.
-- done() prints one line "WRK_RESULT {json}" that loadtest/bench parses.

local next_id = 1

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

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

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
