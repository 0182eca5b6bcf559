-- Stores a value the resolver read from the Source, unless the code was
-- invalidated after the resolver looked at L2 (its generation moved on), so a
-- slow load never writes back a link that was deleted or a negative entry for
-- a code that was created meanwhile.
--
-- KEYS[1] link key, KEYS[2] generation key
-- ARGV[1] generation seen before the load ("" when there was none)
-- ARGV[2] value, ARGV[3] TTL in milliseconds
-- Returns 1 when stored, 0 when skipped.
local gen = redis.call("GET", KEYS[2])
if (gen or "") ~= ARGV[1] then
  return 0
end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
return 1
