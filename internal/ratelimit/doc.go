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
//   - Leaser: in front of a Fallback, takes tokens from the Redis bucket up
//     to 16 at a time and spends them in-process; not exact, within the
//     bounds under Leases. For the redirect policy only.
//
// Production wiring: one Batcher and Fallback shared by all policies; the
// redirect policy leases, the others (create must be exact) use the
// over-limit cache:
//
//	client := redis.NewClient(ratelimit.LimiterOptions(opts, 50*time.Millisecond))
//	batcher, _ := ratelimit.NewBatcher(ratelimit.BatcherConfig{Client: client})
//	defer batcher.Close()
//	fallback, _ := ratelimit.NewFallback(ratelimit.FallbackConfig{
//		Primary: batcher, Instances: cfg.Instances, Logger: log, Recorder: rec})
//	exact, _ := ratelimit.NewOverLimitCache(ratelimit.OverLimitConfig{Next: fallback})
//	create, _ := ratelimit.New(ratelimit.Config{Policy: createPolicy, Decider: exact, Recorder: rec})
//	leased, _ := ratelimit.NewLeaser(ratelimit.LeaseConfig{Next: fallback})
//	redirectPolicy.FailOpen = true
//	redirect, _ := ratelimit.New(ratelimit.Config{Policy: redirectPolicy, Decider: leased, Recorder: rec})
//
// The cache and the Leaser go outside the Fallback, so that the breaker's
// probes always reach Redis. The Leaser remembers denials itself, so it
// needs no OverLimitCache. Without Redis, Decider is a LocalLimiter and the
// rest is the same.
//
// All deciders are safe for concurrent use by any number of goroutines.
// Batcher owns worker goroutines and must be closed; the others hold no
// goroutines.
//
// # Leases
//
// The Leaser takes n ≤ L tokens (LeaseConfig.Size, default 16) in one exact
// decision of the script and hands them to the next requests of the same
// policy and key on this instance, for at most MaxAge (default 1s) after
// the call that took them; unused ones are then dropped, never returned.
// A lease is at most half the bucket's estimated content, so as a bucket
// runs out leases shrink to one token, i.e. exact decisions; and at most
// twice the demand the key has shown on this instance (its first request
// takes one token), so a client whose requests reach an instance at least
// MaxAge apart is decided exactly there. Only one lease per key and
// instance is asked for at a time (concurrent requests queue for it); a
// busy key asks for its next one when half of the last is spent, so that
// its requests rarely wait for Redis.
// Decisions Redis could not make (fail-open, local fallback) are passed
// through and never leased from.
//
// Every leased token is taken from the shared bucket, atomically, before it
// is spent, and is spent at most once: leasing creates no tokens, it only
// moves the moment a taken token is spent to later, by less than MaxAge.
// Per policy and key, with I instances and r = Limit/Period:
//
//   - From a moment the bucket is full and no instance holds leased tokens
//     for the key (as at its first request), admissions over any time t
//     never exceed Burst + r×t, the exact bucket's own limit.
//   - Over any window [a, b), admitted ≤ B(a) + r×(b−a) + I×(L−1), where
//     B(a) ≤ Burst is the bucket's content at a: B(a) + r×(b−a) is the
//     most the exact limiter could admit in the window, and the rest are
//     tokens taken before a and spent in the window, those the instances
//     hold at a (at most L−1 each, counting a lease in flight: one is
//     asked for when the last is spent or dropped, or ahead for at most
//     L−1 less the tokens still held). As a token is
//     spent within MaxAge of being taken, also admitted ≤ Burst +
//     r×(b−a+MaxAge). So beyond the exact limiter's worst case Burst +
//     r×(b−a), a window admits at most min(I×(L−1), r×MaxAge) more: for
//     redirect 1200/1m:200 on 4 instances, 20 (a tenth of the burst).
//     (Windows are in real time, decisions counted when Redis makes them;
//     a request admitted from a lease counts when it is admitted.)
//   - Under-admission: a request is denied only when its instance holds no
//     leased token for the key and Redis denies one token (the Retry-After
//     is Redis's). Other instances may then hold up to (I−1)×(L−1) tokens
//     for the key, spent on their own requests or dropped MaxAge after they
//     were taken (or when MaxKeys evicts the key): at most L−1 tokens lost
//     per instance and key per MaxAge, and none on an instance the client's
//     requests reach at least MaxAge apart (decided exactly there).
//
// TestLeaserWindowBound reaches the bound: 4 instances each holding 15
// tokens of a 1000/1s:100 bucket that has refilled admit about 258 in the
// next 100ms (the bound: 260), where the exact limiter admits at most 200.
// In TestLeaserGlobalAccuracy, 4 instances × 200 concurrent requests on a
// 100/1h:100 bucket admit exactly 100, every time.
//
// Remaining on a leased decision is the last Redis Remaining for the key
// plus the tokens this instance still holds for it: exact for one instance
// between refills, an overstatement by what other instances hold.
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
// over-admission to bound. The OverLimitCache removes the remaining cost
// where a limiter earns its keep: a client hammering past its limit is
// answered in-process. What is left, one script call per allowed decision,
// the Leaser divides by up to 16 for clients making several requests, within
// the bounds under Leases; a client's first request (the common case for
// redirects from many clients) still costs a round trip. The package
// benchmarks (BenchmarkServer, BenchmarkServerOverLimit) measure all of this
// against a Fiber server without the limiter, in the same run, reporting CPU
// time per request for the process (server and load generator) and for a
// private redis-server. On a 2-core VM with Redis on the same machine, 64
// concurrent clients each under its limit and sending requests back to back
// (best of 13 interleaved runs: the VM's speed varied up to 2× between
// runs, so medians mixed fast and slow runs):
//
//	                   ns/op  app CPU µs/req  Redis CPU µs/req  throughput
//	no limiter          3506      6.0              0             1
//	LocalLimiter        3743      6.8              0             0.94
//	RedisLimiter       13595     13.7              8.2           0.26
//	Batcher, per key    9602      8.9              5.6           0.37
//	Batcher             8072      8.8              3.8           0.43
//	production stack    8083      8.9              3.7           0.43
//	production + lease  4070      7.1              0.5           0.86
//
// (An earlier measurement on the same VM, medians of 3 runs, had the bare
// server at 7507 ns/op and the production stack at 0.51.) With Redis on its
// own machine the application's share is what limits throughput: 6.0/8.9 =
// 0.68 of the bare server for the production stack, 6.0/7.1 = 0.85 with
// leases (0.44 for RedisLimiter), and the bare server there answers a
// constant string. Clients over their limit (99% 429s) cost Redis about
// 3.5µs per request through the Batcher and 0.2µs behind the OverLimitCache
// or the Leaser.
package ratelimit
