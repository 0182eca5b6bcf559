package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// Issue 3, item 4: a link deleted through instance A stops resolving on
// instance B, which holds it in its LRU, within a second (pub/sub eviction),
// and B never answers a stale 302 after its first 404. 50 rounds on two
// processes sharing one Redis and one PostgreSQL database.
func TestCacheInvalidationAcrossInstances(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := cachePair(t, r, testRedisTimeout)
	m := startCacheMonitor(t, r)

	const rounds = 50
	const bound = time.Second
	delays := make([]time.Duration, 0, rounds)
	for round := 0; round < rounds; round++ {
		url := fmt.Sprintf("https://example.com/invalidate/%d", round)
		code := a.create(t, fmt.Sprintf(`{"url":%q}`, url))["code"].(string)
		// B resolves it and holds it in its LRU (checked: a GET without an
		// L2 lookup), so only the invalidation message can make B forget it.
		cacheResolveIntoL1(t, b, m, code, url)

		start := time.Now() // from the DELETE request, not its 204: the stricter measure
		if r := do(t, "DELETE", a.URL+"/api/v1/links/"+code, nil, adminAuth); r.Status != http.StatusNoContent {
			t.Fatalf("round %d: DELETE on A: %d %s", round, r.Status, r.Body)
		}
		var delay time.Duration
		stale := 0
		for {
			// Polled back to back, no pause: the delay's resolution is one
			// loopback round trip.
			r := do(t, "GET", b.URL+"/"+code, nil)
			if r.Status == http.StatusNotFound {
				delay = time.Since(start)
				break
			}
			if r.Status != http.StatusFound {
				t.Fatalf("round %d: GET on B while waiting for the eviction: %d %s", round, r.Status, r.Body)
			}
			stale++
			if time.Since(start) > 2*bound {
				t.Fatalf("round %d: B still redirects %v after the delete (%d stale answers)", round, time.Since(start), stale)
			}
		}
		if delay >= bound {
			t.Errorf("round %d: B answered 404 only %v after the DELETE, want < %v", round, delay, bound)
		}
		delays = append(delays, delay)
		// After the first 404, never a stale 302 again, on B nor on A.
		for i := 0; i < 20; i++ {
			for _, s := range []*server{b, a} {
				if r := do(t, "GET", s.URL+"/"+code, nil); r.Status != http.StatusNotFound {
					t.Fatalf("round %d: GET %d on %s after B's first 404: %d Location %q, want 404",
						round, i, s.URL, r.Status, r.Header.Get("Location"))
				}
			}
		}
	}
	t.Logf("invalidation delay over %d rounds (DELETE on A sent → first 404 on B): p50=%v p99=%v max=%v",
		rounds, cachePercentile(delays, 0.50), cachePercentile(delays, 0.99), cachePercentile(delays, 1))
}

// A code that was looked up while unknown is cached as a negative entry in
// both tiers; creating it clears that at once on the creating instance and,
// through the invalidation channel, within a second on the other. The
// negative TTL is a minute, so only the invalidation can explain a 302.
func TestCacheNegativeEntryClearedByCreate(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := cachePair(t, r, testRedisTimeout, "LINKGATE_NEGATIVE_TTL=1m")
	rdb := cacheRedisClient(t, r)
	code := cacheAlias("neg-")

	for _, s := range []*server{a, b} {
		for i := 0; i < 2; i++ {
			resp := do(t, "GET", s.URL+"/"+code, nil)
			if resp.Status != http.StatusNotFound || resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("GET unknown code on %s: %d Cache-Control %q, want 404 no-store", s.URL, resp.Status, resp.Header.Get("Cache-Control"))
			}
		}
	}
	ttl, err := rdb.PTTL(t.Context(), "lg:link:"+code).Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("negative entry lg:link:%s in Redis: PTTL %v, %v; want one with a TTL of at most the 1m negative TTL", code, ttl, err)
	}

	url := "https://example.com/negative"
	a.create(t, fmt.Sprintf(`{"url":%q,"code":%q}`, url, code))
	// A evicted its own LRU before answering 201: its very next GET redirects.
	if resp := do(t, "GET", a.URL+"/"+code, nil); resp.Status != http.StatusFound || resp.Header.Get("Location") != url {
		t.Fatalf("GET on A right after A created the code: %d Location %q, want 302", resp.Status, resp.Header.Get("Location"))
	}
	start := time.Now()
	for {
		resp := do(t, "GET", b.URL+"/"+code, nil)
		if resp.Status == http.StatusFound {
			break
		}
		if resp.Status != http.StatusNotFound {
			t.Fatalf("GET on B: %d %s", resp.Status, resp.Body)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("B still answers 404 %v after the code was created on A", time.Since(start))
		}
	}
	t.Logf("negative entry on B cleared %v after the create on A", time.Since(start))
	for i := 0; i < 20; i++ {
		if resp := do(t, "GET", b.URL+"/"+code, nil); resp.Status != http.StatusFound || resp.Header.Get("Location") != url {
			t.Fatalf("GET %d on B after its first 302: %d, want 302 again", i, resp.Status)
		}
	}
}

// Through the running service: 64 concurrent first requests for a code make
// one store read (one write-back of the link into Redis), and a second
// instance then serves the link from Redis without reading the store.
func TestCacheOneStoreReadAndSharedRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := cachePair(t, r, testRedisTimeout)
	m := startCacheMonitor(t, r)
	url := "https://example.com/burst"
	code := a.create(t, fmt.Sprintf(`{"url":%q}`, url))["code"].(string)

	const n = 64
	statuses := make([]int, n)
	locations := make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("GET", a.URL+"/"+code, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i], locations[i] = resp.StatusCode, resp.Header.Get("Location")
		}(i)
	}
	close(start)
	wg.Wait()
	for i := range statuses {
		if statuses[i] != http.StatusFound || locations[i] != url {
			t.Fatalf("request %d: %d Location %q, want 302 to %s", i, statuses[i], locations[i], url)
		}
	}
	m.sync()
	// Every store read after an L2 miss ends in one fill script that SETs the
	// value (its generation check passes: nothing invalidated the code since
	// the create). Loads after the first find the value in Redis.
	if got := m.fills(code); got != 1 {
		t.Fatalf("%d concurrent first requests wrote the link into Redis %d times, want exactly 1 (one store read)", n, got)
	}
	mgetsA := m.mgets(code)

	if resp := do(t, "GET", b.URL+"/"+code, nil); resp.Status != http.StatusFound || resp.Header.Get("Location") != url {
		t.Fatalf("GET on B: %d Location %q", resp.Status, resp.Header.Get("Location"))
	}
	m.sync()
	if got := m.mgets(code); got != mgetsA+1 {
		t.Fatalf("B's first GET made %d L2 lookups, want 1", got-mgetsA)
	}
	if got := m.fills(code); got != 1 {
		t.Fatalf("B's first GET wrote the link into Redis again (%d fills): it read the store instead of using Redis", got)
	}
	t.Logf("%d concurrent first requests on A: %d L2 lookups, 1 store read; B: 1 L2 hit, 0 store reads", n, mgetsA)
}
