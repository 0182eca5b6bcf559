package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/scripts/lua"
)

// Redis is what the Redis-backed deciders need from a go-redis client.
// *redis.Client, *redis.ClusterClient and *redis.Ring satisfy it. Configure
// the client with LimiterOptions (or equivalent settings) so that a dead
// Redis costs a decision tens of milliseconds, never seconds.
type Redis interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
}

// LimiterOptions returns a copy of o tuned for rate limiting: every network
// wait (dial, read, write, pool) bounded by timeout, context deadlines
// honoured, no command retries (a retried script could take tokens twice)
// and a single dial attempt per connection. A timeout <= 0 means 50ms.
func LimiterOptions(o *redis.Options, timeout time.Duration) *redis.Options {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	c := *o
	c.MaxRetries = -1
	c.DialerRetries = 1
	c.DialTimeout = timeout
	c.ReadTimeout = timeout
	c.WriteTimeout = timeout
	c.PoolTimeout = timeout
	c.ContextTimeoutEnabled = true
	return &c
}

// defaultTimeout bounds one decision's wait for Redis.
const defaultTimeout = 50 * time.Millisecond

// DefaultPrefix starts every bucket key.
const DefaultPrefix = "lg:rl:"

// bucketScript runs scripts/lua/token_bucket.lua; shared by RedisLimiter and
// Batcher.
type bucketScript struct {
	script *redis.Script
	prefix string

	mu   sync.RWMutex
	argv map[Policy][]any // the policy part of ARGV, formatted and boxed once
}

// maxCachedPolicies bounds bucketScript.argv; a process has a few policies.
const maxCachedPolicies = 64

func newBucketScript(prefix string) *bucketScript {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &bucketScript{script: redis.NewScript(lua.TokenBucket()), prefix: prefix, argv: make(map[Policy][]any)}
}

// key is the Redis key of a bucket: the prefix, then the policy and client
// key in one hash tag, so that the key maps to one Redis Cluster slot
// whatever the prefix. The concatenation also copies key, which may be a
// view into a reused request buffer.
func (s *bucketScript) key(p Policy, key string) string {
	return s.prefix + "{" + p.Name + ":" + key + "}"
}

// args appends the script's ARGV for one bucket of p taking cost to dst.
func (s *bucketScript) args(dst []any, p Policy, cost int64) []any {
	s.mu.RLock()
	pa, ok := s.argv[p]
	s.mu.RUnlock()
	if !ok {
		pr := p.params()
		pa = []any{strconv.FormatInt(pr.rate, 10), strconv.FormatInt(pr.unit, 10), strconv.FormatInt(pr.burst, 10)}
		s.mu.Lock()
		if len(s.argv) < maxCachedPolicies {
			s.argv[p] = pa
		}
		s.mu.Unlock()
	}
	dst = append(dst, pa...)
	if cost == 1 {
		return append(dst, "1") // a constant: boxing it does not allocate
	}
	return append(dst, strconv.FormatInt(cost, 10))
}

// decision converts the script's reply for one bucket.
func decision(p Policy, cmd *redis.Cmd) (Decision, error) {
	v, err := cmd.Int64Slice()
	if err != nil {
		return Decision{}, err
	}
	if len(v) != 4 {
		return Decision{}, fmt.Errorf("token bucket script returned %d values, want 4", len(v))
	}
	return decisionOf(p, v), nil
}

// decisionOf converts one bucket's four values of the script's reply.
func decisionOf(p Policy, v []int64) Decision {
	return Decision{
		Allowed:    v[0] == 1,
		Limit:      p.Burst,
		Remaining:  v[1],
		RetryAfter: time.Duration(v[2]) * time.Microsecond,
		Reset:      time.Duration(v[3]) * time.Microsecond,
		Source:     SourceRedis,
	}
}

// RedisConfig configures a RedisLimiter.
type RedisConfig struct {
	// Client is the Redis client. Required.
	Client Redis
	// Prefix starts every key (tests use a unique one). Default: DefaultPrefix.
	Prefix string
}

// RedisLimiter is the exact, shared Decider: every decision is one atomic
// run of the token-bucket script (EVALSHA, EVAL after NOSCRIPT) against the
// bucket's key, so any number of instances share each bucket exactly. One
// network round trip per decision; see Batcher for the cheaper way to run
// the same script. Safe for concurrent use.
type RedisLimiter struct {
	client Redis
	s      *bucketScript
}

// NewRedisLimiter returns a RedisLimiter, or an error when cfg.Client is nil.
func NewRedisLimiter(cfg RedisConfig) (*RedisLimiter, error) {
	if cfg.Client == nil {
		return nil, errors.New("new redis rate limiter: Client is required")
	}
	return &RedisLimiter{client: cfg.Client, s: newBucketScript(cfg.Prefix)}, nil
}

// Allow implements Decider. Redis errors, including ctx's deadline, are
// returned wrapped; the script is never retried after a network error, so a
// token is never taken twice (at worst one is taken and the caller sees an
// error).
func (r *RedisLimiter) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	if err := check(p, cost); err != nil {
		return Decision{}, err
	}
	if p.Disabled {
		return disabledDecision(), nil
	}
	d, err := decision(p, r.s.script.Run(ctx, r.client, []string{r.s.key(p, key)}, r.s.args(make([]any, 0, 4), p, cost)...))
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit %s: %w", p.Name, err)
	}
	return d, nil
}
