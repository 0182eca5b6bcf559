package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// Issue 3, item 5: Redis is SIGKILLed in the middle of a redirect load on two
// instances and started again 10 s later. No redirect fails, and once Redis
// is back both instances use it again without a restart: they resubscribe,
// write keys and count Redis hits again (seen in Redis's INFO and in each
// instance's linkgate_cache_requests_total). The LRU holds 50 links of 400,
// so most requests go to Redis (or, while it is down, to the store).
func TestCacheRedisKilledDuringLoad(t *testing.T) {
	const (
		codes   = 400
		workers = 8 // half on each instance
		phase   = 10 * time.Second
	)
	r := testenv.StartRedis(t)
	a, b := cachePair(t, r, "LINKGATE_CACHE_SIZE=50")
	rdb := cacheRedisClient(t, r)

	targets := make([]struct{ code, url string }, codes)
	var cwg sync.WaitGroup
	for w := 0; w < 8; w++ {
		cwg.Add(1)
		go func(w int) {
			defer cwg.Done()
			for i := w; i < codes; i += 8 {
				url := fmt.Sprintf("https://example.com/load/%d", i)
				body := fmt.Sprintf(`{"url":%q}`, url)
				resp, err := client.Post(a.URL+"/api/v1/links", "application/json", strings.NewReader(body))
				if err != nil {
					t.Errorf("create %d: %v", i, err)
					return
				}
				var out struct{ Code string }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated || err != nil {
					t.Errorf("create %d: %d %v", i, resp.StatusCode, err)
					return
				}
				targets[i].code, targets[i].url = out.Code, url
			}
		}(w)
	}
	cwg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// The load: keep-alive clients, random existing codes, every answer
	// checked. phaseNow counts requests per phase: 0 Redis up, 1 down,
	// 2 up again.
	var phaseNow atomic.Int32
	var perPhase [3]atomic.Int64
	var failures atomic.Int64
	var failMu sync.Mutex
	var failSamples []string
	fail := func(msg string) {
		failures.Add(1)
		failMu.Lock()
		if len(failSamples) < 10 {
			failSamples = append(failSamples, msg)
		}
		failMu.Unlock()
	}
	latencies := make([][]time.Duration, workers)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	loadStart := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := a
			if w%2 == 1 {
				s = b
			}
			c := &http.Client{
				Timeout:       5 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
				Transport:     &http.Transport{MaxIdleConnsPerHost: 2},
			}
			defer c.CloseIdleConnections()
			for ctx.Err() == nil {
				tg := targets[rand.IntN(codes)]
				p := phaseNow.Load()
				t0 := time.Now()
				resp, err := c.Get(s.URL + "/" + tg.code)
				if err != nil {
					fail(fmt.Sprintf("phase %d: GET /%s on %s: %v", p, tg.code, s.URL, err))
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				latencies[w] = append(latencies[w], time.Since(t0))
				perPhase[p].Add(1)
				if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != tg.url {
					fail(fmt.Sprintf("phase %d: GET /%s on %s: %d Location %q, want 302 to %s",
						p, tg.code, s.URL, resp.StatusCode, resp.Header.Get("Location"), tg.url))
				}
			}
		}(w)
	}
	// stopLoad ends the load and waits for it; safe to call twice.
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { stop(); wg.Wait() }) }
	defer stopLoad()

	// Phase 0: Redis up. It must be serving linkgate, or this test shows nothing.
	cacheWaitUntil(loadStart.Add(phase))
	if hits := cacheRedisStat(t, rdb, "keyspace_hits"); hits < 100 {
		t.Fatalf("before the kill Redis had only %d keyspace hits: linkgate is not using it", hits)
	}
	servers := []*server{a, b}
	var beforeKill, beforeStart, atRecovery, atEnd [2]map[string]float64
	for i, s := range servers {
		beforeKill[i] = cacheCounters(t, s)
		if beforeKill[i]["redis/hit"] == 0 {
			t.Fatalf("instance %d counted no Redis hits before the kill: %v", i, beforeKill[i])
		}
	}

	// Phase 1: Redis killed.
	r.Kill()
	phaseNow.Store(1)
	killed := time.Now()
	for _, s := range servers {
		if resp := do(t, "GET", s.URL+"/ready", nil); resp.Status != 200 {
			t.Errorf("/ready on %s with Redis down: %d, want 200 (Redis does not pull an instance out)", s.URL, resp.Status)
		}
	}
	cacheWaitUntil(killed.Add(phase))
	for i, s := range servers {
		beforeStart[i] = cacheCounters(t, s)
	}

	// Phase 2: Redis back on the same port, empty (it keeps nothing on disk).
	r.Start()
	phaseNow.Store(2)
	restarted := time.Now()
	var subs, keys, hits int64
	testenv.WaitFor(t, phase, "both instances to resubscribe and use Redis again", func() bool {
		n, err := rdb.PubSubNumSub(ctx, "lg:invalidate").Result()
		if err != nil {
			return false
		}
		subs = n["lg:invalidate"]
		keys, _ = rdb.DBSize(ctx).Result()
		hits, err = cacheRedisStatErr(rdb, "keyspace_hits")
		return err == nil && subs == 2 && keys > 0 && hits >= 100
	})
	recovered := time.Since(restarted)
	hitsAtRecovery := hits
	for i, s := range servers {
		atRecovery[i] = cacheCounters(t, s)
	}
	cacheWaitUntil(restarted.Add(phase))
	hitsAfter := cacheRedisStat(t, rdb, "keyspace_hits")
	for i, s := range servers {
		atEnd[i] = cacheCounters(t, s)
	}
	stopLoad()
	elapsed := time.Since(loadStart)

	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	total := int64(len(all))
	t.Logf("redirect load over %v on 2 instances (%d workers): %d requests (%.0f/s); with Redis up %d, down %d, back %d; failures %d",
		elapsed.Round(time.Millisecond), workers, total, float64(total)/elapsed.Seconds(),
		perPhase[0].Load(), perPhase[1].Load(), perPhase[2].Load(), failures.Load())
	t.Logf("latency p50=%v p99=%v max=%v; Redis back in use %v after its restart (%d subscribers, %d keys, %d hits; %d hits at the end)",
		cachePercentile(all, 0.5), cachePercentile(all, 0.99), cachePercentile(all, 1), recovered.Round(time.Millisecond),
		subs, keys, hitsAtRecovery, hitsAfter)

	for i := range servers {
		d := func(from, to map[string]float64, key string) float64 { return to[key] - from[key] }
		t.Logf("instance %d: Redis up: %.0f L2 hits, %.0f L2 errors, %.0f store reads; down: %.0f L2 errors, %.0f store reads; back: %.0f L2 hits, %.0f store reads",
			i, beforeKill[i]["redis/hit"], beforeKill[i]["redis/error"], beforeKill[i]["store/hit"],
			d(beforeKill[i], beforeStart[i], "redis/error"), d(beforeKill[i], beforeStart[i], "store/hit"),
			d(atRecovery[i], atEnd[i], "redis/hit"), d(atRecovery[i], atEnd[i], "store/hit"))
		if d(beforeKill[i], beforeStart[i], "redis/error") == 0 || d(beforeKill[i], beforeStart[i], "store/hit") == 0 {
			t.Errorf("instance %d: while Redis was down it counted no Redis errors or no store reads", i)
		}
		if d(atRecovery[i], atEnd[i], "redis/hit") == 0 {
			t.Errorf("instance %d: no Redis hits after Redis came back: it does not use Redis again", i)
		}
	}
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d failed redirects, e.g.:\n%s", n, strings.Join(failSamples, "\n"))
	}
	for p := range perPhase {
		if perPhase[p].Load() < 100 {
			t.Fatalf("only %d requests in phase %d: the load did not run through it", perPhase[p].Load(), p)
		}
	}
	if hitsAfter <= hitsAtRecovery {
		t.Fatalf("keyspace hits stopped growing after the recovery (%d → %d)", hitsAtRecovery, hitsAfter)
	}
}

// cacheWaitUntil blocks until the load schedule reaches at. It paces the test; it
// synchronises with nothing.
func cacheWaitUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		<-time.After(d)
	}
}
