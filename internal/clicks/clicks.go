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
//
// Codes of up to maxInline bytes (every generated code, most aliases) are
// counted under a fixed-size key held inside the map itself: with string
// keys, each Add compared the code with the key first stored, a string
// elsewhere on the heap that was rarely still in the CPU's cache, and the
// garbage collector scanned every pending key. (perf under wrk over 2,000
// codes, linkgate embedded: the insert, its comparison and Add took about
// 0.5µs of a redirect with string keys, 0.3µs with these.) Longer codes keep
// string keys.
type Counter struct {
	cfg     Config
	seed    maphash.Seed
	shards  [counterShards]counterShard
	flushMu sync.Mutex // one flush at a time, so retried batches keep their order
}

const counterShards = 16

// maxInline is the longest code counted under an inlineKey.
const maxInline = len(inlineKey{}) - 1

// inlineKey is a short code's bytes, zero-padded, with its length in the
// last byte (so that codes ending in NUL bytes stay apart).
type inlineKey [24]byte

func makeInlineKey(code string) (k inlineKey) {
	copy(k[:], code)
	k[maxInline] = byte(len(code))
	return k
}

func (k *inlineKey) code() string { return string(k[:k[maxInline]]) }

type counterShard struct {
	mu    sync.Mutex
	short map[inlineKey]int64 // codes of at most maxInline bytes
	long  map[string]int64    // longer codes
	_     [40]byte            // one 64-byte cache line per shard (TestShardFillsACacheLine)
}

// New returns a Counter; call Run to flush periodically.
func New(cfg Config) (*Counter, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c := &Counter{cfg: cfg, seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].short = make(map[inlineKey]int64)
		c.shards[i].long = make(map[string]int64)
	}
	return c, nil
}

func (c *Counter) shard(code string) *counterShard {
	return &c.shards[maphash.String(c.seed, code)%counterShards]
}

// Add counts one click on code. A code longer than maxInline bytes is kept
// as a map key: pass a string the caller owns (not a Fiber buffer).
func (c *Counter) Add(code string) { c.add(code, 1) }

func (c *Counter) add(code string, n int64) {
	s := c.shard(code)
	s.mu.Lock()
	if len(code) <= maxInline {
		s.short[makeInlineKey(code)] += n
	} else {
		s.long[code] += n
	}
	s.mu.Unlock()
}

// Pending returns the clicks on code counted but not yet flushed.
func (c *Counter) Pending(code string) int64 {
	s := c.shard(code)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(code) <= maxInline {
		return s.short[makeInlineKey(code)]
	}
	return s.long[code]
}

// take empties the shards into one batch.
func (c *Counter) take() map[string]int64 {
	var batch map[string]int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		var short map[inlineKey]int64 // the shard's maps, once swapped out
		var long map[string]int64
		if len(s.short) > 0 {
			short, s.short = s.short, make(map[inlineKey]int64, len(s.short))
		}
		if len(s.long) > 0 {
			long, s.long = s.long, make(map[string]int64, len(s.long))
		}
		s.mu.Unlock()
		if short == nil && long == nil {
			continue
		}
		if batch == nil {
			batch = make(map[string]int64, counterShards*(len(short)+len(long)))
		}
		for k, n := range short {
			batch[k.code()] += n
		}
		for code, n := range long {
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
			c.add(code, n)
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
