-- token_bucket.lua: rate-limit decisions, atomically.
--
-- A token bucket in integer arithmetic. Time is in microseconds from the
-- server's own clock (TIME), never from the caller. Tokens are scaled so that
-- refilling is exact: one token is UNIT scaled units (UNIT = the policy
-- period in microseconds) and the bucket gains RATE units per microsecond
-- (RATE = tokens per period), i.e. exactly RATE tokens per period with no
-- rounding. The caller keeps CAP = BURST * UNIT and RATE at most 2^52, so
-- every value here is an integer a Lua double holds exactly, and every
-- division is rounded explicitly (floor/ceil of an exact quotient).
--
-- One call decides for one bucket or, to save round trips and per-call
-- overhead, for several (all at the same instant, in order). With several
-- keys, they must live on one Redis node (not Cluster or client-side
-- sharding); one key per call is Cluster safe.
--
-- KEYS[i]        bucket i: a hash {t = tokens in scaled units, ts = last
--                update in microseconds}. A missing key is a full bucket; the
--                key expires when the bucket would be full again, so idle
--                buckets cost no memory.
-- ARGV[4i-3..4i] for bucket i:
--                RATE   scaled units gained per microsecond (policy limit N)
--                UNIT   scaled units per token (policy period in microseconds)
--                BURST  bucket capacity in tokens
--                COST   tokens this request takes (1 <= COST <= BURST)
--
-- Returns, for bucket i at positions 4i-3..4i: allowed (1|0), remaining
-- tokens (floor), retry-after microseconds (0 when allowed: time until COST
-- tokens are available), reset microseconds (time until the bucket is full).
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}

for i = 1, #KEYS do
  local key = KEYS[i]
  local a = 4 * (i - 1)
  local rate = tonumber(ARGV[a + 1])
  local unit = tonumber(ARGV[a + 2])
  local cap = tonumber(ARGV[a + 3]) * unit
  local need = tonumber(ARGV[a + 4]) * unit
  local now = clock

  local tokens = cap
  local state = redis.call('HMGET', key, 't', 'ts')
  if state[1] and state[2] then
    tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if now < ts then
      -- The server clock went back (failover to a replica with a slower
      -- clock): never refill for time that did not pass, never move ts back.
      now = ts
    end
    if now - ts >= math.ceil((cap - tokens) / rate) then
      tokens = cap
    else
      tokens = tokens + (now - ts) * rate
    end
  end

  local allowed = 0
  local retry_after = 0
  if tokens >= need then
    allowed = 1
    tokens = tokens - need
    -- string.format('%d') writes every digit; Lua's default number
    -- formatting would round large values to 14 significant digits.
    redis.call('HSET', key, 't', string.format('%d', tokens), 'ts', string.format('%d', now))
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(math.ceil((cap - tokens) / rate) / 1000)))
  else
    retry_after = math.ceil((need - tokens) / rate)
  end

  out[a + 1] = allowed
  out[a + 2] = math.floor(tokens / unit)
  out[a + 3] = retry_after
  out[a + 4] = math.ceil((cap - tokens) / rate)
end

return out
