// Package ratelimit is linkgate's rate limiter: policies, the Redis token
// bucket, an in-process bucket with the same semantics, a circuit-breaking
// fallback between them, and the Fiber middleware that renders decisions as
// HTTP headers.
//
// # Algorithm
//
// Every policy is a token bucket: Burst tokens of capacity, refilled at Limit
// tokens per Period, each request taking one token (Allow takes a cost of
// 1..Burst). With Redis, every decision is made atomically by
// scripts/lua/token_bucket.lua on the bucket's one key,
// "<prefix>{<policy>:<key>}" (a hash tag, so each bucket lives in one Redis
// Cluster slot), the only state involved. The script reads the
// time from Redis (TIME), never from the application, so instances with
// skewed clocks share buckets exactly; it keeps the state in one hash, does
// integer arithmetic only (one token is Period-in-microseconds scaled units,
// refilled at Limit units per microsecond: no rounding drift), and sets a
// PEXPIRE of the time until the bucket is full again on every write, so idle
// keys disappear. LocalLimiter runs the same arithmetic in Go.
//
// # Deciders
//
//   - RedisLimiter: one EVALSHA round trip per decision (EVAL after NOSCRIPT).
//   - Batcher: the same script and the same exact results, but concurrent
//     decisions share round trips: one script call per batch on a single
//     Redis node, or a pipeline of per-key calls with Cluster or Ring.
//   - OverLimitCache: in front of either, answers locally the requests of a
//     client Redis has just denied, until a token can exist again (exact:
//     it never denies what Redis would allow).
//   - LocalLimiter: in-process buckets, bounded memory; used without Redis.
//   - Fallback: a shared decider behind a circuit breaker; while Redis is
//     unavailable a FailOpen policy (redirect) allows, others use a local
//     bucket holding 1/Instances of the policy.
//
// Production wiring, for every policy (all of it is exact, so the create
// policy needs nothing different):
//
//	client := redis.NewClient(ratelimit.LimiterOptions(opts, 50*time.Millisecond))
//	batcher, _ := ratelimit.NewBatcher(ratelimit.BatcherConfig{Client: client})
//	defer batcher.Close()
//	fallback, _ := ratelimit.NewFallback(ratelimit.FallbackConfig{
//		Primary: batcher, Instances: cfg.Instances, Logger: log, Recorder: rec})
//	decider, _ := ratelimit.NewOverLimitCache(ratelimit.OverLimitConfig{Next: fallback})
//	redirect.FailOpen = true
//	mw, _ := ratelimit.New(ratelimit.Config{Policy: redirect, Decider: decider, Recorder: rec})
//
// The cache goes outside the Fallback, so that the breaker's probes always
// reach Redis. Without Redis, Decider is a LocalLimiter and the rest is the
// same.
//
// All deciders are safe for concurrent use by any number of goroutines.
// Batcher owns worker goroutines and must be closed; the others hold no
// goroutines.
//
// # Redis client
//
// Build the client with LimiterOptions (50ms dial/read/write/pool timeouts,
// context deadlines honoured, MaxRetries -1, one dial attempt): the script is
// never retried after a network error, which could take a token twice.
// Redis 5 or later is required (scripts calling TIME before writing).
//
// # Headers
//
// The middleware follows draft-ietf-httpapi-ratelimit-headers-10 (September
// 2025), whose fields are Structured Fields (RFC 9651) Lists of Items keyed
// by the policy name as a String:
//
//	RateLimit-Policy: "create";q=10;w=20
//	RateLimit: "create";r=9;t=2
//
// q is the quota (Burst), w the window (seconds an empty bucket takes to
// fill: Burst×Period/Limit, rounded up), r the remaining tokens and t the
// seconds until the bucket is full again (rounded up). A 429 also carries
// Retry-After in delay-seconds: the time until the request's tokens are
// available, rounded up, at least 1. No limiter fields are sent on 3xx
// responses. With Config.LegacyHeaders the conventional X-RateLimit-Limit
// (= q), X-RateLimit-Remaining (= r) and X-RateLimit-Reset (= t, seconds,
// not a timestamp) are added too.
//
// # Metrics
//
// A Recorder (declared here, implemented by internal/metrics) receives the
// decisions per policy, labelled by one of Decisions() (allowed, limited,
// fail_open, error), the backend errors, and whether the fallback is active.
//
// # Cost
//
// A naive EVALSHA per request costs a network round trip, its system calls
// on both sides, and Redis's per-call script overhead (about 5µs of Redis
// CPU for this script, against 0.6µs for a plain HSET). The Batcher pays one
// round trip and one script call per batch of up to MaxBatch concurrent
// decisions and never waits for a batch to fill, so it adds no latency when
// idle and at most one round trip under load. A batch runs in Redis as one
// script, atomically and in order, each decision on its own key with the
// same arithmetic, so it admits exactly what RedisLimiter admits: there is no
// over-admission to bound. (Leasing token batches to instances was
// considered and rejected: it over-admits by up to instances × (lease−1)
// tokens per key and window, and still costs a round trip per new key, the
// common case for redirects from many clients.) The OverLimitCache removes
// the remaining cost where a limiter earns its keep: a client hammering past
// its limit is answered in-process. The package benchmarks (BenchmarkServer,
// BenchmarkServerOverLimit) measure all of this against a Fiber server
// without the limiter, in the same run, reporting CPU time per request for
// the process (server and load generator) and for a private redis-server.
// On a 2-core VM with Redis on the same machine, 64 concurrent clients each
// under its limit (medians of 3 interleaved runs):
//
//	                  ns/op  app CPU µs/req  Redis CPU µs/req  throughput
//	no limiter         7507      6.6              0             1
//	LocalLimiter       7524      7.5              0             1.00
//	RedisLimiter      25407     16.4              9.1           0.30
//	Batcher, per key  17083     10.2              6.4           0.44
//	Batcher           15520     10.5              4.4           0.48
//	production stack  14804     10.7              4.2           0.51
//
// With Redis on its own machine the application's share is what limits
// throughput: 6.6/10.7 = 0.61 of the bare server (0.40 for RedisLimiter), and
// the bare server there answers a constant string. Clients over their limit
// (98% 429s) cost Redis 3.3µs per request through the Batcher and 0.2µs
// behind the OverLimitCache.
package ratelimit
