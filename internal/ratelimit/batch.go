package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/redisscript"
)

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Client is the Redis client. Required.
	Client Redis
	// Prefix starts every key. Default: DefaultPrefix.
	Prefix string
	// MaxBatch is the most decisions sent in one round trip. Default: 64.
	MaxBatch int
	// Workers is the number of round trips in flight at once. Fewer make
	// larger batches, which cost less CPU on both sides; more overlap round
	// trips to a distant Redis. Default: 2.
	Workers int
	// Timeout bounds one round trip; callers' own deadlines still apply to
	// their wait. Default: 50ms.
	Timeout time.Duration
	// PerKeyCalls sends a batch as a pipeline of one script call per
	// decision instead of one script call for the whole batch. It is forced
	// on for any client but a *redis.Client (one Redis node): with Redis
	// Cluster or a Ring, the keys of one batch live on different nodes, and a
	// call must name keys of one node only. Default: false.
	PerKeyCalls bool
}

// Batcher is an exact, shared Decider that costs far less than one round
// trip per decision: concurrent Allow calls are queued, and each of a few
// worker goroutines takes whatever is queued (up to MaxBatch) and decides it
// in one round trip: one EVALSHA of the script over all the batch's buckets
// on a single Redis node, or a pipeline of one EVALSHA per bucket
// (PerKeyCalls, and always with Cluster or Ring clients). Nothing waits for a
// batch to fill: an idle Batcher sends a lone decision at once, and batches
// form only while earlier round trips are in flight, so the added latency is
// at most one round trip under load. Every decision is still made by the
// same atomic script on its bucket's key with Redis's clock, so results are
// exactly those of RedisLimiter.
//
// Safe for concurrent use. Close stops the workers; Allow after Close
// returns ErrClosed.
type Batcher struct {
	client  Redis
	s       *bucketScript
	max     int
	timeout time.Duration
	perKey  bool
	queue   chan *batchReq
	pool    sync.Pool

	mu      sync.RWMutex // guards closed against sends on queue
	closed  bool
	workers sync.WaitGroup
}

// ErrClosed is returned by Allow after Close.
var ErrClosed = errors.New("rate limiter closed")

type batchReq struct {
	ctx  context.Context
	p    Policy
	key  string // the Redis key
	cost int64
	out  chan batchResult // buffered 1: a worker never blocks on it
}

type batchResult struct {
	d   Decision
	err error
}

// NewBatcher starts a Batcher's workers. It returns an error when
// cfg.Client is nil.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("new rate limit batcher: Client is required")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 64
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	b := &Batcher{
		client:  cfg.Client,
		s:       newBucketScript(cfg.Prefix),
		max:     cfg.MaxBatch,
		timeout: cfg.Timeout,
		perKey:  cfg.PerKeyCalls,
		queue:   make(chan *batchReq, cfg.MaxBatch*cfg.Workers),
	}
	if _, oneNode := cfg.Client.(*redis.Client); !oneNode {
		b.perKey = true
	}
	b.pool.New = func() any { return &batchReq{out: make(chan batchResult, 1)} }
	b.workers.Add(cfg.Workers)
	for range cfg.Workers {
		go b.work()
	}
	return b, nil
}

// Allow implements Decider. It waits for its pipeline or for ctx, whichever
// ends first; a decision abandoned by ctx may still be applied in Redis.
func (b *Batcher) Allow(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
	if err := check(p, cost); err != nil {
		return Decision{}, err
	}
	if p.Disabled {
		return disabledDecision(), nil
	}
	r := b.pool.Get().(*batchReq)
	r.ctx, r.p, r.key, r.cost = ctx, p, b.s.key(p, key), cost

	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return Decision{}, ErrClosed
	}
	select {
	case b.queue <- r:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return Decision{}, fmt.Errorf("rate limit %s: queue: %w", p.Name, ctx.Err())
	}

	select {
	case res := <-r.out:
		r.ctx = nil
		b.pool.Put(r) // only after its result was taken: no worker holds it now
		if res.err != nil {
			return Decision{}, fmt.Errorf("rate limit %s: %w", p.Name, res.err)
		}
		return res.d, nil
	case <-ctx.Done():
		// r is abandoned, not pooled: a worker may still answer it.
		return Decision{}, fmt.Errorf("rate limit %s: %w", p.Name, ctx.Err())
	}
}

// Close stops the workers after the queued decisions are answered. It is
// safe to call more than once.
func (b *Batcher) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.queue)
	}
	b.mu.Unlock()
	b.workers.Wait()
	return nil
}

func (b *Batcher) work() {
	defer b.workers.Done()
	w := &batchWorker{
		b:     b,
		batch: make([]*batchReq, 0, b.max),
		keys:  make([]string, 0, b.max),
		argv:  make([]any, 0, 4*b.max),
	}
	for r := range b.queue {
		w.batch = append(w.batch[:0], r)
	fill:
		for len(w.batch) < b.max {
			select {
			case r, ok := <-b.queue:
				if !ok {
					break fill
				}
				w.batch = append(w.batch, r)
			default:
				break fill
			}
		}
		w.run()
		clear(w.batch)
	}
}

// batchWorker is one worker goroutine's reusable buffers.
type batchWorker struct {
	b     *Batcher
	batch []*batchReq
	keys  []string
	argv  []any
}

// run decides the batch in one round trip and answers every request in it.
func (w *batchWorker) run() {
	// Requests whose callers have gone are answered without a Redis call.
	live := w.batch[:0] // filtered in place
	for _, r := range w.batch {
		if err := r.ctx.Err(); err != nil {
			r.out <- batchResult{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.b.timeout)
	defer cancel()
	if w.b.perKey {
		w.pipelined(ctx, live)
	} else {
		w.oneCall(ctx, live)
	}
}

// oneCall runs the script once over all of reqs' buckets (EVALSHA, EVAL
// after NOSCRIPT).
func (w *batchWorker) oneCall(ctx context.Context, reqs []*batchReq) {
	keys, argv := w.keys[:0], w.argv[:0]
	for _, r := range reqs {
		keys = append(keys, r.key)
		argv = w.b.s.args(argv, r.p, r.cost)
	}
	v, err := w.b.s.script.Run(ctx, w.b.client, keys, argv...).Int64Slice()
	if err == nil && len(v) != 4*len(reqs) {
		err = fmt.Errorf("token bucket script returned %d values for %d buckets", len(v), len(reqs))
	}
	for i, r := range reqs {
		if err != nil {
			r.out <- batchResult{err: err}
		} else {
			r.out <- batchResult{d: decisionOf(r.p, v[4*i:4*i+4])}
		}
	}
	clear(keys)
	clear(argv)
}

// pipelined sends one EVALSHA per request in one pipeline (EVAL for those
// answered NOSCRIPT, see redisscript) and answers each request as soon as its
// command is final.
func (w *batchWorker) pipelined(ctx context.Context, reqs []*batchReq) {
	calls := make([]redisscript.Call, len(reqs))
	for i, r := range reqs {
		calls[i] = redisscript.Call{Keys: []string{r.key}, Args: w.b.s.args(make([]any, 0, 4), r.p, r.cost)}
	}
	redisscript.Pipelined(ctx, w.b.client, w.b.s.script, calls, func(i int, c *redis.Cmd) {
		d, err := decision(reqs[i].p, c)
		reqs[i].out <- batchResult{d: d, err: err}
	})
}
