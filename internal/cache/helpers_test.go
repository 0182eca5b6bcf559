package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/testenv"
)

var _ Redis = (*redis.Client)(nil)

// memSource is an in-memory Source standing in for the store's logic. It
// counts GetLink calls, and calls block (when set) after the lookup and
// before returning, so a test can hold a load in flight.
type memSource struct {
	reads atomic.Int64

	mu    sync.Mutex
	links map[string]links.Link
	block func(code string)
	fail  error
}

func newSource(ls ...links.Link) *memSource {
	s := &memSource{links: make(map[string]links.Link)}
	for _, l := range ls {
		s.put(l)
	}
	return s
}

func (s *memSource) GetLink(ctx context.Context, code string) (*links.Link, error) {
	s.reads.Add(1)
	s.mu.Lock()
	l, ok := s.links[code]
	block, fail := s.block, s.fail
	s.mu.Unlock()
	if block != nil {
		block(code)
	}
	if fail != nil {
		return nil, fail
	}
	if !ok {
		return nil, links.Errorf(links.ENOTFOUND, "Link %q not found.", code)
	}
	return &l, nil
}

func (s *memSource) put(l links.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.links[l.Code] = l
}

func (s *memSource) del(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.links, code)
}

func (s *memSource) setBlock(f func(code string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.block = f
}

func (s *memSource) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// testLink returns a link for code with every cached field set.
func testLink(code string) links.Link {
	return links.Link{
		ID:        int64(len(code))*1000 + 7,
		Code:      code,
		URL:       "https://example.com/" + code + "?q=1",
		Redirect:  links.RedirectTemporary,
		CreatedAt: time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC),
		ExpiresAt: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC),
		Clicks:    42,
	}
}

// recorder is a Metrics that counts calls by layer/result.
type recorder struct {
	mu sync.Mutex
	n  map[string]int
}

func newRecorder() *recorder { return &recorder{n: make(map[string]int)} }

func (r *recorder) CacheRequest(layer, result string) {
	r.mu.Lock()
	r.n[layer+"/"+result]++
	r.mu.Unlock()
}

func (r *recorder) get(layer, result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[layer+"/"+result]
}

func (r *recorder) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.n))
	for k, v := range r.n {
		if v != 0 {
			m[k] = v
		}
	}
	return m
}

// wantCounts fails t unless r's counts are exactly want.
func wantCounts(t *testing.T, name string, r *recorder, want map[string]int) {
	t.Helper()
	got := r.snapshot()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s counts = %v, want %v", name, got, want)
	}
}

// redisClient returns a client for url with ContextTimeoutEnabled, closed
// when t ends.
func redisClient(tb testing.TB, url string) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("parse redis url: %v", err)
	}
	opt.ContextTimeoutEnabled = true
	rc := redis.NewClient(opt)
	tb.Cleanup(func() { _ = rc.Close() })
	return rc
}

// newCache returns a Cache for cfg, closed when t ends.
func newCache(tb testing.TB, cfg Config) *Cache {
	tb.Helper()
	c, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// startRun runs c.Run until t ends and, with Redis, waits for its first
// subscription (which clears L1).
func startRun(t *testing.T, c *Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if c.cfg.Redis != nil {
		testenv.WaitFor(t, 10*time.Second, "subscription", func() bool { return c.subscriptions.Load() >= 1 })
	}
}

// sharedPair returns two instances A and B on the test Redis with a private
// key prefix and channel, each with its own recorder, both running Run.
func sharedPair(t *testing.T, src Source, tweak func(*Config)) (a, b *Cache, ra, rb *recorder) {
	t.Helper()
	url := testenv.RedisURL(t)
	prefix := testenv.KeyPrefix(t)
	ra, rb = newRecorder(), newRecorder()
	mk := func(rec *recorder) *Cache {
		cfg := Config{Source: src, Redis: redisClient(t, url), KeyPrefix: prefix, Recorder: rec,
			RedisTimeout: testRedisTimeout}
		if tweak != nil {
			tweak(&cfg)
		}
		c := newCache(t, cfg)
		startRun(t, c)
		return c
	}
	return mk(ra), mk(rb), ra, rb
}

func isNotFound(err error) bool { return links.ErrorCode(err) == links.ENOTFOUND }

// mustResolve resolves code on c and fails t unless it gives want.
func mustResolve(t *testing.T, c *Cache, code string, want links.Link) links.Target {
	t.Helper()
	l, err := c.Resolve(t.Context(), code)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", code, err)
	}
	sameLink(t, l, want)
	return l
}

// sameCachedLink fails t unless got holds want's fields that L2 keeps
// (Clicks is not cached and must be 0).
func sameCachedLink(t *testing.T, got *links.Link, want links.Link) {
	t.Helper()
	if got == nil {
		t.Fatal("got nil link")
	}
	if got.ID != want.ID || got.Code != want.Code || got.URL != want.URL || got.Redirect != want.Redirect ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || got.Clicks != 0 {
		t.Fatalf("link = %+v, want %+v without clicks", *got, want)
	}
}

// sameLink fails t unless got is want's redirect target.
func sameLink(t *testing.T, got links.Target, want links.Link) {
	t.Helper()
	if got.Code != want.Code || got.URL != want.URL || got.Redirect != want.Redirect || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("target = %+v, want that of %+v", got, want)
	}
}

func mustNotFound(t *testing.T, c *Cache, code string) {
	t.Helper()
	l, err := c.Resolve(t.Context(), code)
	if !isNotFound(err) {
		t.Fatalf("Resolve(%q) = %v, %v; want ENOTFOUND", code, l, err)
	}
}

// pollFor polls cond every 100µs until it holds or timeout passes, and
// returns how long it took. It is testenv.Eventually with a finer grain, for
// measuring delays.
func pollFor(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

var errBoom = errors.New("boom")

// testRedisTimeout replaces the 50 ms default in tests that assert on L2
// writes: on a loaded 2-core machine under -race a fresh connection's first
// EVALSHA/EVAL can take longer, and a timed-out write (correctly) caches
// nothing, which would make exact counts flaky.
const testRedisTimeout = 2 * time.Second
