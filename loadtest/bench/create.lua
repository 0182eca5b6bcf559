-- wrk script of `make bench`: POST /api/v1/links with a JSON body whose URL
-- is unique per request (run prefix from the first script argument, thread
-- id, counter), so every request creates a new link with a random code.
-- The harness appends result.lua (thread ids, the WRK_RESULT line).

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
