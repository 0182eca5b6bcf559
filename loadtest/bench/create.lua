-- wrk script of `make bench`: POST /api/v1/links with a JSON body whose URL
-- is unique per request (run prefix from the first script argument, thread
-- id, counter), so every request creates a new link with a random code.
-- done() prints one line "WRK_RESULT {json}" that loadtest/bench parses.

local next_id = 1

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

local prefix = "run"
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  prefix = args[1] or prefix
end

function request()
  counter = counter + 1
  local body = string.format('{"url":"https://example.com/bench/%s/%d/%d?utm_source=bench"}',
    prefix, thread_id or 0, counter)
  return wrk.format("POST", "/api/v1/links", headers, body)
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
