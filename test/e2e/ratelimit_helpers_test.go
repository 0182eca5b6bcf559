package e2e

// Helpers of the rate-limit end-to-end tests (ratelimit_*_test.go): policy
// environments, a private Redis with a client for the test's own queries,
// parsers and checks for the RateLimit / RateLimit-Policy / Retry-After
// fields, and a small concurrent request counter.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/testenv"
)

// rlPolicies returns the LINKGATE_RATELIMIT_* entries for the three
// policies. startServer puts its own "off" entries first, so these win.
func rlPolicies(redirect, create, api string) []string {
	return []string{
		"LINKGATE_RATELIMIT_REDIRECT=" + redirect,
		"LINKGATE_RATELIMIT_CREATE=" + create,
		"LINKGATE_RATELIMIT_API=" + api,
	}
}

// testRedisTimeout replaces production's 50 ms bound on Redis calls in tests
// that count exact outcomes: on a loaded machine (CI, -race) a fresh
// connection's first EVALSHA can take longer than 50 ms, and the fallback
// that triggers (a local bucket, a cache miss, a retried invalidation)
// would change the counts. The tests of a slow or dead Redis keep 50 ms.
const testRedisTimeout = "LINKGATE_REDIS_TIMEOUT=2s"

// rlRedis starts a private redis-server (the bucket keys have no
// configurable prefix, so tests must not share a Redis) and returns it with
// a client for the test's own queries; both are closed when t ends.
func rlRedis(t *testing.T) (*testenv.Redis, *redis.Client) {
	t.Helper()
	r := testenv.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return r, c
}

// rlBucketKeys returns the limiter's bucket keys in Redis (lg:rl:*), sorted.
func rlBucketKeys(t *testing.T, c *redis.Client) []string {
	t.Helper()
	var keys []string
	iter := c.Scan(context.Background(), 0, "lg:rl:*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN lg:rl:*: %v", err)
	}
	sort.Strings(keys)
	return keys
}

var (
	rlRateLimitRe = regexp.MustCompile(`^"([a-z][a-z0-9_-]*)";r=([0-9]+);t=([0-9]+)$`)
	rlPolicyRe    = regexp.MustCompile(`^"([a-z][a-z0-9_-]*)";q=([0-9]+);w=([0-9]+)$`)
)

// rlFields are the parsed limiter fields of one response:
// RateLimit-Policy: "<Policy>";q=Q;w=W and RateLimit: "<Policy>";r=R;t=T.
type rlFields struct {
	Policy     string
	Q, W, R, T int64
}

// rlHeaders parses RateLimit-Policy and RateLimit; it fails the test when
// either is missing, appears twice, is malformed, or when they name
// different policies.
func rlHeaders(t *testing.T, r response) rlFields {
	t.Helper()
	pol, lim := r.Header.Values("RateLimit-Policy"), r.Header.Values("RateLimit")
	if len(pol) != 1 || len(lim) != 1 {
		t.Fatalf("%d response: RateLimit-Policy %q, RateLimit %q: want exactly one of each", r.Status, pol, lim)
	}
	pm, lm := rlPolicyRe.FindStringSubmatch(pol[0]), rlRateLimitRe.FindStringSubmatch(lim[0])
	if pm == nil || lm == nil {
		t.Fatalf("%d response: malformed RateLimit-Policy %q or RateLimit %q", r.Status, pol[0], lim[0])
	}
	if pm[1] != lm[1] {
		t.Fatalf("RateLimit-Policy %q and RateLimit %q name different policies", pol[0], lim[0])
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	return rlFields{Policy: pm[1], Q: n(pm[2]), W: n(pm[3]), R: n(lm[2]), T: n(lm[3])}
}

// rlNoHeaders fails the test when r carries any limiter field.
func rlNoHeaders(t *testing.T, r response, what string) {
	t.Helper()
	for _, h := range []string{"RateLimit", "RateLimit-Policy", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"} {
		if v := r.Header.Values(h); len(v) > 0 {
			t.Fatalf("%s: %d response carries %s: %q, want none", what, r.Status, h, v)
		}
	}
}

// rl429 checks a limiter denial: status 429, Retry-After in delay-seconds
// (an integer >= 1), the limiter fields naming policy with r=0, and an
// application/problem+json body of type quota-exceeded with a "policy"
// member. It returns the fields and Retry-After.
func rl429(t *testing.T, r response, policy string) (rlFields, int64) {
	t.Helper()
	p := edgeProblem(t, r, http.StatusTooManyRequests)
	if p["type"] != "urn:linkgate:problem:quota-exceeded" || p["policy"] != policy {
		t.Fatalf("429 problem type %v policy %v, want urn:linkgate:problem:quota-exceeded and %q: %s",
			p["type"], p["policy"], policy, r.Body)
	}
	ra := r.Header.Values("Retry-After")
	if len(ra) != 1 {
		t.Fatalf("429 with Retry-After %q, want one field", ra)
	}
	secs, err := strconv.ParseInt(ra[0], 10, 64)
	if err != nil || secs < 1 || strconv.FormatInt(secs, 10) != ra[0] {
		t.Fatalf("429 Retry-After %q, want delay-seconds >= 1", ra[0])
	}
	f := rlHeaders(t, r)
	if f.Policy != policy || f.R != 0 {
		t.Fatalf("429 fields %+v, want policy %q with r=0", f, policy)
	}
	return f, secs
}

// rlInRange fails the test unless lo <= v <= hi.
func rlInRange(t *testing.T, what string, v, lo, hi int64) {
	t.Helper()
	if v < lo || v > hi {
		t.Fatalf("%s = %d, want %d..%d", what, v, lo, hi)
	}
}

// rlDecisions is the series of linkgate_ratelimit_decisions_total for a
// policy and decision, as scrape names it.
func rlDecisions(policy, decision string) string {
	return fmt.Sprintf(`linkgate_ratelimit_decisions_total{decision=%q,policy=%q}`, decision, policy)
}

// rlRandomIP returns a random public-looking IPv4 address for forged headers.
func rlRandomIP() string {
	return fmt.Sprintf("%d.%d.%d.%d", 1+rand.IntN(222), rand.IntN(256), rand.IntN(256), 1+rand.IntN(254))
}

// rlCount sends n requests from workers goroutines (send(i) sends the i-th)
// and returns how many got each status. A transport error fails the test.
func rlCount(t *testing.T, n, workers int, send func(i int) (response, error)) map[int]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[int]int{}
	var errs []error
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := send(i)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					counts[r.Status]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, first: %v", len(errs), n, errs[0])
	}
	return counts
}

// rlPercentile returns the q-quantile (0..1) of ds, which it sorts.
func rlPercentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(q * float64(len(ds)-1))
	return ds[i]
}
