// Package cache is the resolver cache in front of the link store: an
// in-process LRU (L1, our own compact one: see lru.go for why) over a shared
// Redis (L2) over the store (the Source of truth). It answers with the
// links.Target a redirect needs, which is all L1 keeps of a link.
//
// Resolve looks a code up in L1, then L2, then the Source. Concurrent misses
// for one code are collapsed with singleflight into one load, so a burst of N
// requests for an uncached code makes one Source read. Unknown codes are
// cached as negative entries in both tiers for NegativeTTL. Redis failures and
// timeouts never fail a Resolve: it falls through to the Source and counts the
// error.
//
// Invalidate removes a code from both tiers and publishes it on a Redis
// channel; Run subscribes to that channel and evicts published codes from
// this instance's L1, and clears all of L1 whenever its subscription is
// re-established (invalidations may have been missed while it was down).
// Loads that raced with an invalidation do not write back what they read:
// each instance counts its L1 evictions, and Redis keeps a generation per
// code that a Lua script checks before an L2 write.
//
// Keys, under Config.KeyPrefix (default "lg:"):
//
//	lg:link:{code}   the cached value: a link or a negative marker (see codec.go)
//	lg:gen:{code}    the code's invalidation generation
//
// Expiry: a cached link is served until its cache TTL passes, also after its
// ExpiresAt. Like the store, the cache returns expired links; the caller checks
// l.Expired(now) and answers 410 Gone. Capping TTLs at ExpiresAt would only
// move the expired link back to the store on every request.
//
// Concurrency: a Cache is safe for concurrent use by any number of goroutines.
// Resolve, Invalidate, Len and NegativeLen may be called at any time, Run at
// most once at a time, and Close at any time and more than once.
package cache

import (
	"context"
	_ "embed" // Lua scripts
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/redisscript"
)

//go:embed fill.lua
var fillLua string

//go:embed invalidate.lua
var invalidateLua string

// Limits that are not worth a Config field.
const (
	// maxCodeLen is the longest code that is cached. Longer codes (no link
	// has one) go straight to the Source, so that a scan with huge random
	// codes cannot fill the caches with large keys.
	maxCodeLen = 256
	// maxPending bounds the invalidations kept for a retry after Redis
	// failed them.
	maxPending = 10_000
	// finalRetryTimeout bounds the last retry of pending invalidations when
	// Run's context ends (shutdown).
	finalRetryTimeout = time.Second
	// minGenTTL is the least time a code's generation is kept in Redis. It
	// must outlast any load that started before the invalidation.
	minGenTTL = 10 * time.Minute
	// logEvery rate-limits the warning about failed Redis calls.
	logEvery = 10 * time.Second
)

// Source is the source of truth the cache reads on a miss: the store.
type Source interface {
	// GetLink returns the link with the code, or an error with code
	// links.ENOTFOUND when there is none. Any other error is a fault.
	GetLink(ctx context.Context, code string) (*links.Link, error)
}

// Redis is the part of a Redis client the cache uses; *redis.Client
// satisfies it. The client must be created with ContextTimeoutEnabled: true,
// or the per-call RedisTimeout cannot interrupt a call (go-redis then waits
// for its ReadTimeout, 5 s by default); New rejects a client whose Options
// say otherwise.
type Redis interface {
	redis.Scripter
	MGet(ctx context.Context, keys ...string) *redis.SliceCmd
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	Pipeline() redis.Pipeliner
}

// Config configures a Cache. Zero fields take the defaults documented on them
// (see defaults). Durations and sizes must not be negative.
type Config struct {
	// Source is the store the cache reads on a miss. Required.
	Source Source
	// Redis is the L2 client. Optional: nil disables L2 and cross-instance
	// invalidation, leaving an LRU in front of the Source.
	Redis Redis
	// LRUSize bounds L1: at most LRUSize links plus LRUSize negative
	// entries, each rounded up to a multiple of the shard count (lru.go).
	// Default 100_000.
	LRUSize int
	// LRUTTL is how long a link stays in L1. Default 5m.
	LRUTTL time.Duration
	// RedisTTL is how long a link stays in L2. Default 1h.
	RedisTTL time.Duration
	// NegativeTTL is how long an unknown code is remembered as unknown, in
	// both tiers. Default 5s.
	NegativeTTL time.Duration
	// RedisTimeout bounds each Redis call (context.WithTimeout per call).
	// Default 50ms.
	RedisTimeout time.Duration
	// KeyPrefix namespaces the cache's keys: link values are
	// KeyPrefix+"link:"+code. Default "lg:".
	KeyPrefix string
	// Channel is the invalidation channel. Default KeyPrefix+"invalidate",
	// i.e. "lg:invalidate".
	Channel string
	// Recorder receives lookup counts. Default: a no-op.
	Recorder Metrics
	// Logger receives warnings about Redis failures (rate-limited) and the
	// subscriber's state changes. Default: discard.
	Logger *slog.Logger
	// Now is the clock; the cache uses it only to rate-limit its Redis
	// warnings (link expiry is the caller's check, see the package doc).
	// Default time.Now.
	Now func() time.Time
	// RetryInterval is how often Run retries invalidations that Redis
	// failed. Default 1s.
	RetryInterval time.Duration
}

// defaults fills in the zero fields and reports a missing Source or a
// negative value.
func (c *Config) defaults() error {
	if c.Source == nil {
		return errors.New("source is required")
	}
	if c.Redis != nil {
		// A typed nil (var r *redis.Client; cfg.Redis = r) means no Redis too.
		if v := reflect.ValueOf(c.Redis); v.Kind() == reflect.Pointer && v.IsNil() {
			c.Redis = nil
		}
	}
	if c.LRUSize < 0 || c.LRUTTL < 0 || c.RedisTTL < 0 || c.NegativeTTL < 0 || c.RedisTimeout < 0 || c.RetryInterval < 0 {
		return errors.New("sizes and durations must not be negative")
	}
	if c.LRUSize == 0 {
		c.LRUSize = 100_000
	}
	if c.LRUTTL == 0 {
		c.LRUTTL = 5 * time.Minute
	}
	if c.RedisTTL == 0 {
		c.RedisTTL = time.Hour
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = 5 * time.Second
	}
	if c.RedisTimeout == 0 {
		c.RedisTimeout = 50 * time.Millisecond
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "lg:"
	}
	if c.Channel == "" {
		c.Channel = c.KeyPrefix + "invalidate"
	}
	if c.Recorder == nil {
		c.Recorder = nopMetrics{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = time.Second
	}
	return nil
}

// Cache is the two-tier resolver cache. Create it with New.
type Cache struct {
	cfg Config
	rec Metrics
	log *slog.Logger

	l1    *lru // live links
	l1neg *lru // codes known not to exist

	// notFound is returned for every unknown code, so that a negative hit
	// allocates nothing.
	notFound error

	group singleflight.Group

	// mu orders L1 writes by loads against evictions: an eviction bumps
	// epoch under mu, and a load writes L1 only if epoch has not moved
	// since it started, so a load that raced with an eviction never puts
	// back what was evicted.
	mu     sync.Mutex
	epoch  atomic.Uint64
	closed bool // under mu

	fill, invalidate *redis.Script
	redisTTLms       int64
	negativeTTLms    int64
	genTTLms         int64

	pendingMu  sync.Mutex
	pending    map[string]uint64 // code → sequence of its last failed invalidation
	pendingSeq uint64

	// Invalidations group-commit (see invalidateL2): while one call is in
	// flight, later ones queue in invNext and go out together after it.
	invMu   sync.Mutex
	invBusy bool      // a call or a queue drain is in flight
	invNext *invBatch // queued while busy; nil when none

	logMu      sync.Mutex
	lastLog    time.Time
	suppressed int

	running       atomic.Bool
	subscriptions atomic.Int64 // subscribe confirmations Run has received
	done          chan struct{}
	closeOnce     sync.Once
}

// New returns a Cache for cfg. It fails when cfg.Source is nil, a size or
// duration is negative, or cfg.Redis is a go-redis client without
// ContextTimeoutEnabled. Call Run to receive invalidations from other
// instances, and Close when done.
func New(cfg Config) (*Cache, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("new cache: %w", err)
	}
	if o, ok := cfg.Redis.(interface{ Options() *redis.Options }); ok {
		if opt := o.Options(); opt != nil && !opt.ContextTimeoutEnabled {
			return nil, errors.New("new cache: the Redis client needs ContextTimeoutEnabled: true for RedisTimeout to bound its calls")
		}
	}
	c := &Cache{
		cfg:           cfg,
		rec:           cfg.Recorder,
		log:           cfg.Logger,
		l1:            newLRU(cfg.LRUSize, cfg.LRUTTL, linkDataPerEntry),
		l1neg:         newLRU(cfg.LRUSize, cfg.NegativeTTL, negativeDataPerEntry),
		notFound:      links.Errorf(links.ENOTFOUND, "Link not found."),
		fill:          redis.NewScript(fillLua),
		invalidate:    redis.NewScript(invalidateLua),
		redisTTLms:    milliseconds(cfg.RedisTTL),
		negativeTTLms: milliseconds(cfg.NegativeTTL),
		genTTLms:      milliseconds(max(cfg.RedisTTL, minGenTTL)),
		pending:       make(map[string]uint64),
		done:          make(chan struct{}),
	}
	return c, nil
}

func milliseconds(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Resolve returns the redirect target of the code, or an error with code
// links.ENOTFOUND when the Source has none (remembered for NegativeTTL).
// Other Source errors are returned wrapped and not cached; Redis errors are
// counted and never returned.
//
// Concurrent misses for one code share one load, which runs with the values
// and deadline of the ctx of the call that started it, but is not cancelled
// with it. A caller whose ctx ends first gets ctx's error at once; the load
// goes on and fills the caches for the others.
//
// Expired links are returned like any other; check t.Expired(now).
//
// The target is the caller's: its Code may be kept even when code is a
// borrowed string (Fiber's c.Params).
func (c *Cache) Resolve(ctx context.Context, code string) (links.Target, error) {
	if t, ok := c.l1.get(code); ok {
		c.rec.CacheRequest(LayerLRU, ResultHit)
		return t, nil
	}
	if c.l1neg.contains(code) {
		c.rec.CacheRequest(LayerLRU, ResultNegativeHit)
		return links.Target{}, c.notFound
	}
	c.rec.CacheRequest(LayerLRU, ResultMiss)
	if err := ctx.Err(); err != nil {
		return links.Target{}, fmt.Errorf("resolve link: %w", err)
	}
	if len(code) > maxCodeLen {
		l, err := c.readSource(ctx, code)
		if err != nil {
			return links.Target{}, err
		}
		return l.Target(), nil
	}
	code = strings.Clone(code)
	ch := c.group.DoChan(code, func() (any, error) {
		// The load serves every caller waiting on it, so it must not stop
		// when its first caller goes away; it keeps that caller's deadline.
		lctx := context.WithoutCancel(ctx)
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			lctx, cancel = context.WithDeadline(lctx, dl)
			defer cancel()
		}
		t, err := c.load(lctx, code)
		if err != nil {
			return nil, err
		}
		return t, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return links.Target{}, r.Err
		}
		return r.Val.(links.Target), nil
	case <-ctx.Done():
		return links.Target{}, fmt.Errorf("resolve link: %w", ctx.Err())
	}
}

// load reads L2 and then the Source for an L1 miss, and fills both tiers.
// code is owned by the cache.
func (c *Cache) load(ctx context.Context, code string) (links.Target, error) {
	// A load that finished just before this one began may have filled L1
	// after our caller looked.
	if t, ok := c.l1.get(code); ok {
		return t, nil
	}
	if c.l1neg.contains(code) {
		return links.Target{}, c.notFound
	}
	epoch := c.epoch.Load()
	var gen string   // the code's L2 generation before the Source read
	canFill := false // whether L2 answered, so that gen is known
	if c.cfg.Redis != nil {
		l, negative, g, err := c.getL2(ctx, code)
		switch {
		case err != nil:
			c.redisError("get", err)
		case l != nil:
			c.rec.CacheRequest(LayerRedis, ResultHit)
			t := l.Target()
			c.putL1(epoch, code, &t)
			return t, nil
		case negative:
			c.rec.CacheRequest(LayerRedis, ResultNegativeHit)
			c.putL1(epoch, code, nil)
			return links.Target{}, c.notFound
		default:
			c.rec.CacheRequest(LayerRedis, ResultMiss)
			gen, canFill = g, true
		}
	}
	l, err := c.readSource(ctx, code)
	if err != nil && links.ErrorCode(err) != links.ENOTFOUND {
		return links.Target{}, err
	}
	if canFill {
		c.putL2(ctx, code, gen, l)
	}
	if l == nil {
		c.putL1(epoch, code, nil)
		return links.Target{}, err
	}
	t := l.Target()
	c.putL1(epoch, code, &t)
	return t, nil
}

// readSource reads the Source and counts the result. It returns the link,
// c.notFound for an unknown code, or a wrapped error.
func (c *Cache) readSource(ctx context.Context, code string) (*links.Link, error) {
	l, err := c.cfg.Source.GetLink(ctx, code)
	switch {
	case err == nil && l != nil:
		c.rec.CacheRequest(LayerStore, ResultHit)
		return l, nil
	case err == nil:
		c.rec.CacheRequest(LayerStore, ResultError)
		return nil, errors.New("resolve link: source returned neither a link nor an error")
	case links.ErrorCode(err) == links.ENOTFOUND:
		c.rec.CacheRequest(LayerStore, ResultMiss)
		return nil, c.notFound
	default:
		c.rec.CacheRequest(LayerStore, ResultError)
		return nil, fmt.Errorf("resolve link: %w", err)
	}
}

// getL2 reads the code's L2 value and generation: a link, a negative entry,
// or neither (a miss).
func (c *Cache) getL2(ctx context.Context, code string) (l *links.Link, negative bool, gen string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	vals, err := c.cfg.Redis.MGet(ctx, c.linkKey(code), c.genKey(code)).Result()
	if err != nil {
		return nil, false, "", fmt.Errorf("get cached link: %w", err)
	}
	if len(vals) != 2 {
		return nil, false, "", fmt.Errorf("get cached link: MGET returned %d values", len(vals))
	}
	gen, _ = vals[1].(string)
	switch v := vals[0].(type) {
	case nil:
		return nil, false, gen, nil
	case string:
		l, negative, err := decodeValue(v)
		if err != nil {
			return nil, false, "", fmt.Errorf("get cached link: %w", err)
		}
		return l, negative, gen, nil
	default:
		return nil, false, "", fmt.Errorf("get cached link: unexpected %T", v)
	}
}

// putL2 stores l (nil: a negative entry) in L2 unless the code's generation
// moved on from gen.
func (c *Cache) putL2(ctx context.Context, code, gen string, l *links.Link) {
	val, ttl := negativeValue, c.negativeTTLms
	if l != nil {
		val, ttl = string(encodeLink(l)), c.redisTTLms
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	err := c.fill.Run(ctx, c.cfg.Redis, []string{c.linkKey(code), c.genKey(code)}, gen, val, ttl).Err()
	if err != nil {
		c.redisError("set", fmt.Errorf("cache link: %w", err))
	}
}

// putL1 stores t (nil: a negative entry) in L1 unless an eviction happened
// since epoch was read or the cache is closed.
func (c *Cache) putL1(epoch uint64, code string, t *links.Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.epoch.Load() != epoch {
		return
	}
	if t != nil {
		c.l1.add(code, t)
	} else {
		c.l1neg.add(code, nil)
	}
}

// evict removes code from L1.
func (c *Cache) evict(code string) {
	c.mu.Lock()
	c.epoch.Add(1)
	c.l1.remove(code)
	c.l1neg.remove(code)
	c.mu.Unlock()
}

// purge empties L1.
func (c *Cache) purge() {
	c.mu.Lock()
	c.epoch.Add(1)
	c.l1.purge()
	c.l1neg.purge()
	c.mu.Unlock()
}

// Invalidate forgets what the caches hold for code, a link or a negative
// entry: it removes code from this instance's L1, deletes it from L2 and
// publishes it on Channel so that every instance running Run evicts it from
// its L1 (typically within milliseconds). Call it after the store deleted or
// created the link. Without Redis only L1 is affected.
//
// When the Redis part fails, L1 has still been evicted and the error is
// returned; the code is kept and Run retries the Redis part every second
// until it succeeds (up to 10,000 codes are kept). Until then other
// instances may serve what they cached.
func (c *Cache) Invalidate(ctx context.Context, code string) error {
	c.evict(code)
	if c.cfg.Redis == nil {
		return nil
	}
	seq := c.pendingMark()
	if err := c.invalidateL2(ctx, code); err != nil {
		c.addPending(code)
		return fmt.Errorf("invalidate link: %w", err)
	}
	c.dropPending(code, seq)
	return nil
}

// invalidateL2 runs the invalidation script for code. Concurrent calls
// share round trips, like a database group commit: a call that finds none
// in flight runs its own script at once; calls arriving while one is in
// flight queue, and when it returns the whole queue goes out as one
// pipeline (from a goroutine, so the first caller does not wait for the
// others), while later calls queue for the next. A caller whose ctx ends
// while it waits gets ctx's error; its code still goes out with the queue.
func (c *Cache) invalidateL2(ctx context.Context, code string) error {
	c.invMu.Lock()
	if c.invBusy {
		b := c.invNext
		if b == nil {
			b = &invBatch{done: make(chan struct{})}
			c.invNext = b
		}
		i := len(b.codes)
		b.codes = append(b.codes, code)
		c.invMu.Unlock()
		select {
		case <-b.done:
			return b.errs[i]
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.invBusy = true
	c.invMu.Unlock()
	err := c.runInvalidations(ctx, []string{code})[0]
	if next := c.nextInvalidations(); next != nil {
		go c.drainInvalidations(next)
	}
	return err
}

// invBatch is a queue of invalidations sent as one pipeline; errs is set,
// one per code, before done is closed.
type invBatch struct {
	codes []string
	errs  []error
	done  chan struct{}
}

// nextInvalidations takes the queued batch, if any, for the caller to send;
// with none, nothing is in flight any more.
func (c *Cache) nextInvalidations() *invBatch {
	c.invMu.Lock()
	defer c.invMu.Unlock()
	b := c.invNext
	c.invNext = nil
	c.invBusy = b != nil
	return b
}

// drainInvalidations sends b, then whatever queued meanwhile, until the
// queue is empty. Each pipeline is bounded by RedisTimeout.
func (c *Cache) drainInvalidations(b *invBatch) {
	for ; b != nil; b = c.nextInvalidations() {
		b.errs = c.runInvalidations(context.Background(), b.codes)
		close(b.done)
	}
}

// runInvalidations runs the invalidation script once per code, in one
// round trip (a pipeline of EVALSHA, EVAL after NOSCRIPT), within
// RedisTimeout, and returns one error per code.
func (c *Cache) runInvalidations(ctx context.Context, codes []string) []error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	calls := make([]redisscript.Call, len(codes))
	for i, code := range codes {
		calls[i] = redisscript.Call{Keys: []string{c.linkKey(code), c.genKey(code)}, Args: []any{c.genTTLms, c.cfg.Channel, code}}
	}
	errs := make([]error, len(codes))
	redisscript.Pipelined(ctx, c.cfg.Redis, c.invalidate, calls, func(i int, cmd *redis.Cmd) {
		if err := cmd.Err(); err != nil {
			errs[i] = fmt.Errorf("delete and publish: %w", err)
			c.redisError("invalidate", errs[i])
		}
	})
	return errs
}

// pendingMark returns the sequence of the latest failed invalidation. A
// successful invalidation that starts after it covers every failure up to it.
func (c *Cache) pendingMark() uint64 {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	return c.pendingSeq
}

// addPending keeps code for Run to retry.
func (c *Cache) addPending(code string) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	if _, ok := c.pending[code]; !ok && len(c.pending) >= maxPending {
		c.log.Error("too many failed invalidations; dropping one, other instances may serve it until their LRU TTL passes",
			"code", code, "pending", len(c.pending))
		return
	}
	c.pendingSeq++
	c.pending[strings.Clone(code)] = c.pendingSeq
}

// dropPending forgets code if its last failure is not newer than seq.
func (c *Cache) dropPending(code string, seq uint64) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	if s, ok := c.pending[code]; ok && s <= seq {
		delete(c.pending, code)
	}
}

// retryPending retries the failed invalidations, stopping at the first
// failure.
func (c *Cache) retryPending(ctx context.Context) {
	c.pendingMu.Lock()
	if len(c.pending) == 0 {
		c.pendingMu.Unlock()
		return
	}
	seq := c.pendingSeq
	codes := make([]string, 0, len(c.pending))
	for code := range c.pending {
		codes = append(codes, code)
	}
	c.pendingMu.Unlock()
	done := 0
	for _, code := range codes {
		if ctx.Err() != nil || c.invalidateL2(ctx, code) != nil {
			break
		}
		c.dropPending(code, seq)
		done++
	}
	if done > 0 {
		c.log.Info("retried failed invalidations", "done", done, "left", len(codes)-done)
	}
}

// redisError counts a failed Redis call and logs it, at most once per
// logEvery.
func (c *Cache) redisError(op string, err error) {
	c.rec.CacheRequest(LayerRedis, ResultError)
	now := c.cfg.Now()
	c.logMu.Lock()
	if !c.lastLog.IsZero() && now.Sub(c.lastLog) < logEvery {
		c.suppressed++
		c.logMu.Unlock()
		return
	}
	suppressed := c.suppressed
	c.suppressed, c.lastLog = 0, now
	c.logMu.Unlock()
	c.log.Warn("redis call failed; resolving from the store", "op", op, "err", err,
		"suppressed_since_last", suppressed)
}

func (c *Cache) linkKey(code string) string { return c.cfg.KeyPrefix + "link:" + code }
func (c *Cache) genKey(code string) string  { return c.cfg.KeyPrefix + "gen:" + code }

// Len returns the number of links in L1, including expired entries not yet
// swept (the LRU sweeps every LRUTTL/100). It is meant for a gauge read at
// scrape time.
func (c *Cache) Len() int { return c.l1.len() }

// NegativeLen returns the number of negative entries in L1, counted like Len.
func (c *Cache) NegativeLen() int { return c.l1neg.len() }

// Close stops Run, empties L1 and makes later loads skip L1. It does not
// close the Redis client, which the caller owns. It always returns nil and
// may be called more than once.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.purge()
	})
	return nil
}
