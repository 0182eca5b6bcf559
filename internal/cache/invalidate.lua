-- Invalidates one code: bumps its generation (so loads in flight do not write
-- back), deletes its cached value (a link or a negative entry) and tells every
-- instance to evict it from its LRU.
--
-- KEYS[1] link key, KEYS[2] generation key
-- ARGV[1] generation TTL in milliseconds, ARGV[2] channel, ARGV[3] code
-- Returns the number of subscribers that received the code.
redis.call("INCR", KEYS[2])
redis.call("PEXPIRE", KEYS[2], ARGV[1])
redis.call("DEL", KEYS[1])
return redis.call("PUBLISH", ARGV[2], ARGV[3])
