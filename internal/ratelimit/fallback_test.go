package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// logCounter is a slog.Handler counting records per level (Info and above).
type logCounter struct {
	mu   sync.Mutex
	n    map[slog.Level]int
	msgs []string
}

func newLogCounter() *logCounter { return &logCounter{n: map[slog.Level]int{}} }

func (h *logCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Level]++
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	h.mu.Unlock()
	return nil
}
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCounter) WithGroup(string) slog.Handler      { return h }

func (h *logCounter) counts() (warn, info int, msgs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[slog.LevelWarn], h.n[slog.LevelInfo], append([]string(nil), h.msgs...)
}

// TestFallbackTransitions drives the breaker with a primary that fails on
// demand: a FailOpen policy allows unchecked, another uses a local bucket of
// 1/Instances of the policy, errors are counted, and each change of state is
// logged and reported once however many requests fail.
func TestFallbackTransitions(t *testing.T) {
	var down atomic.Bool
	var calls atomic.Int64
	primary := deciderFunc(func(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
		calls.Add(1)
		if down.Load() {
			return Decision{}, errors.New("dial tcp: connection refused")
		}
		return Decision{Allowed: true, Limit: p.Burst, Remaining: p.Burst - cost, Source: SourceRedis}, nil
	})
	logs := newLogCounter()
	rec := newTestRecorder()
	f, err := NewFallback(FallbackConfig{
		Primary: primary, Instances: 4, OpenTimeout: 50 * time.Millisecond,
		Logger: slog.New(logs), Recorder: rec, Now: newFakeClock().Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	create := mustPolicy(t, "create", "100/1h:100")
	redirect := mustPolicy(t, "redirect", "100/1h:100")
	redirect.FailOpen = true

	if d := allow(t, f, create, "k", 1); d.Source != SourceRedis {
		t.Fatalf("healthy: %+v", d)
	}
	down.Store(true)
	for range 5 { // the threshold: these reach the primary
		if d := allow(t, f, create, "warm", 1); d.Source != SourceLocal || !d.Allowed {
			t.Fatalf("failing primary: %+v, want a local decision", d)
		}
	}
	if !f.Active() {
		t.Fatal("breaker still closed after 5 consecutive failures")
	}
	before := calls.Load()
	admitted := 0
	for range 200 {
		d := allow(t, f, create, "k", 1)
		if d.Source != SourceLocal || d.Limit != 25 {
			t.Fatalf("open breaker, create: %+v, want local with limit 25 (100/4)", d)
		}
		if d.Allowed {
			admitted++
		}
		if d := allow(t, f, redirect, "k", 1); !d.Allowed || d.Source != SourceNone {
			t.Fatalf("open breaker, redirect: %+v, want allowed unchecked", d)
		}
	}
	if admitted != 25 {
		t.Fatalf("local fallback admitted %d, want 25 (burst 100 / 4 instances)", admitted)
	}
	if n := calls.Load() - before; n > 1 {
		t.Fatalf("open breaker called the primary %d times in a burst, want at most one probe", n)
	}
	// Failed probes re-open the breaker without new log records.
	testenv.WaitFor(t, 5*time.Second, "a failed probe", func() bool {
		allow(t, f, create, "probe", 1)
		return calls.Load() >= before+3
	})
	down.Store(false)
	testenv.WaitFor(t, 5*time.Second, "recovery", func() bool {
		return allow(t, f, create, "k", 1).Source == SourceRedis
	})
	if f.Active() {
		t.Fatal("fallback active after a redis decision")
	}

	warn, info, msgs := logs.counts()
	if warn != 1 || info != 1 {
		t.Fatalf("log records: %d warnings, %d infos (%q), want one of each for one outage", warn, info, msgs)
	}
	_, errs, fallback := rec.snapshot()
	if want := []bool{false, true, false}; !equalBools(fallback, want) {
		t.Fatalf("FallbackActive calls %v, want %v", fallback, want)
	}
	if want := int(calls.Load() - 2); errs != want { // all but the first and last calls failed
		t.Fatalf("BackendError counted %d, want %d", errs, want)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFallbackCallerCancelled: a caller that went away gets its error, and
// it is not held against Redis.
func TestFallbackCallerCancelled(t *testing.T) {
	primary := deciderFunc(func(ctx context.Context, p Policy, key string, cost int64) (Decision, error) {
		<-ctx.Done()
		return Decision{}, ctx.Err()
	})
	rec := newTestRecorder()
	f, err := NewFallback(FallbackConfig{Primary: primary, Recorder: rec, FailureThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Allow(ctx, mustPolicy(t, "create", "1/1s"), "k", 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err %v, want context.Canceled", err)
	}
	if _, errs, _ := rec.snapshot(); errs != 0 || f.Active() {
		t.Fatalf("cancellation counted as a backend error (%d) or opened the breaker (%v)", errs, f.Active())
	}
	// A primary that does not answer within Timeout is a failure, answered locally.
	f2, err := NewFallback(FallbackConfig{Primary: primary, Recorder: rec, Timeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := allow(t, f2, mustPolicy(t, "create", "1/1s"), "k", 1); d.Source != SourceLocal {
		t.Fatalf("slow primary: %+v, want a local decision", d)
	}
	if _, errs, _ := rec.snapshot(); errs != 1 {
		t.Fatalf("slow primary counted %d backend errors, want 1", errs)
	}
}

func TestFallbackLocalPolicy(t *testing.T) {
	tests := map[string]struct {
		spec      string
		instances int
		want      Policy
	}{
		"one instance":    {"30/1m:10", 1, Policy{Limit: 30, Period: time.Minute, Burst: 10}},
		"two instances":   {"30/1m:10", 2, Policy{Limit: 30, Period: 2 * time.Minute, Burst: 5}},
		"burst rounds up": {"30/1m:10", 3, Policy{Limit: 30, Period: 3 * time.Minute, Burst: 4}},
		"tiny burst":      {"1/1h:1", 10, Policy{Limit: 1, Period: 10 * time.Hour, Burst: 1}},
		"long period":     {"1000/365d:4", 2, Policy{Limit: 1000, Period: 2 * 365 * 24 * time.Hour, Burst: 2}},
		"period overflow": {"1000/365d:142", 3, Policy{Limit: 333, Period: 365 * 24 * time.Hour, Burst: 48}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := NewFallback(FallbackConfig{Primary: NewLocalLimiter(LocalConfig{}), Instances: tt.instances})
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Name = "p"
			got := f.localPolicy(mustPolicy(t, "p", tt.spec))
			if got != tt.want {
				t.Fatalf("localPolicy = %+v, want %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFallbackRedisKilled kills Redis under load: decisions keep coming
// within the timeout (the fail-open policy allows, the other uses the local
// bucket), the breaker opens, no decision waits 200ms, and Redis-backed
// decisions resume within 6s of Redis returning.
func TestFallbackRedisKilled(t *testing.T) {
	r := testenv.StartRedis(t)
	for _, kind := range deciderKinds {
		t.Run(kind.name, func(t *testing.T) {
			c := newClient(t, r.URL(), 50*time.Millisecond) // the default timeouts throughout
			logs := newLogCounter()
			rec := newTestRecorder()
			cfg := FallbackConfig{Instances: 2, Logger: slog.New(logs), Recorder: rec}
			var decider Decider
			var f *Fallback
			if kind.name == "production" {
				decider, f = newProductionStack(t, c, "kill:"+kind.name+":", 0, cfg)
			} else {
				cfg.Primary = kind.make(t, c, "kill:"+kind.name+":", 0)
				var err error
				if f, err = NewFallback(cfg); err != nil {
					t.Fatal(err)
				}
				decider = f
			}
			create := mustPolicy(t, "create", "1000000/1s")
			redirect := mustPolicy(t, "redirect", "1000000/1s")
			redirect.FailOpen = true

			// Redis was restarted empty by the previous subtest: warmed
			// first, so that the breaker opens at the kill and only then.
			warmUp(t, decider, create)

			var mu sync.Mutex
			var maxWait time.Duration
			var lastRedis time.Time
			sources := map[string]int{}
			var failures atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 6 {
				p := create
				if g%2 == 0 {
					p = redirect
				}
				wg.Go(func() {
					// A steady load (about 2000 decisions/s per goroutine) rather
					// than a spin: on two cores, six spinning goroutines under
					// -race would measure the scheduler, not the limiter.
					tick := time.NewTicker(500 * time.Microsecond)
					defer tick.Stop()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						t0 := time.Now()
						d, err := decider.Allow(context.Background(), p, "c"+strconv.Itoa(i%50), 1)
						waited := time.Since(t0)
						if err != nil || !d.Allowed {
							failures.Add(1)
							t.Errorf("%s: %+v %v", p.Name, d, err)
							continue
						}
						if waited > 100*time.Millisecond {
							t.Logf("slow decision: %v %s/%s at %s", waited, p.Name, d.Source, t0.Format("15:04:05.000"))
						}
						mu.Lock()
						maxWait = max(maxWait, waited)
						sources[p.Name+"/"+d.Source]++
						if d.Source == SourceRedis {
							lastRedis = time.Now()
						}
						mu.Unlock()
					}
				})
			}
			count := func(k string) int { mu.Lock(); defer mu.Unlock(); return sources[k] }
			testenv.WaitFor(t, 5*time.Second, "redis decisions", func() bool { return count("create/redis") > 50 })

			r.Kill()
			testenv.WaitFor(t, 5*time.Second, "the breaker to open", f.Active)
			nLocal, nOpen := count("create/local"), count("redirect/none")
			testenv.WaitFor(t, 5*time.Second, "fallback decisions", func() bool {
				return count("create/local") > nLocal+50 && count("redirect/none") > nOpen+50
			})

			r.Start()
			back := time.Now()
			testenv.WaitFor(t, 6*time.Second, "redis decisions after restart", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return lastRedis.After(back)
			})
			resumed := time.Since(back)
			close(stop)
			wg.Wait()

			mu.Lock()
			defer mu.Unlock()
			t.Logf("resumed %v after restart; longest decision %v; sources %v", resumed.Round(time.Millisecond), maxWait, sources)
			if failures.Load() != 0 {
				t.Fatalf("%d decisions failed or denied", failures.Load())
			}
			if maxWait >= 200*time.Millisecond {
				t.Fatalf("a decision waited %v, want < 200ms", maxWait)
			}
			warn, info, msgs := logs.counts()
			if warn != 1 || info != 1 {
				t.Fatalf("log records: %d warnings, %d infos (%q), want one of each", warn, info, msgs)
			}
			if _, errs, fb := rec.snapshot(); errs == 0 || !equalBools(fb, []bool{false, true, false}) {
				t.Fatalf("recorder: %d backend errors, fallback %v; want errors and [false true false]", errs, fb)
			}
		})
	}
}
