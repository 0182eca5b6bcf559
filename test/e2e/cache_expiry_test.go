package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// Issue 3, item 7: a link that expires while it sits in the LRU of two
// instances and in Redis answers 410 on the very first request on each
// instance after its expires_at, not after some cache TTL.
func TestCacheExpiredLinkGoneOnFirstRequest(t *testing.T) {
	r := testenv.StartRedis(t)
	a, b := cachePair(t, r, testRedisTimeout)
	m := startCacheMonitor(t, r)
	rdb := cacheRedisClient(t, r)

	url := "https://example.com/expiring"
	exp := time.Now().Add(5 * time.Second).UTC() // the setup below must finish before it
	l := a.create(t, fmt.Sprintf(`{"url":%q,"expires_at":%q}`, url, exp.Format(time.RFC3339Nano)))
	code := l["code"].(string)
	stored, err := time.Parse(time.RFC3339Nano, l["expires_at"].(string))
	if err != nil || stored.Sub(exp).Abs() > time.Millisecond {
		t.Fatalf("expires_at came back as %v (%v), want %v", l["expires_at"], err, exp)
	}
	for _, s := range []*server{a, b} {
		cacheResolveIntoL1(t, s, m, code, url)
	}
	if n, err := rdb.Exists(t.Context(), "lg:link:"+code).Result(); err != nil || n != 1 {
		t.Fatalf("lg:link:%s in Redis: %d, %v; want the link cached in L2 too", code, n, err)
	}
	if time.Now().After(stored) {
		t.Fatalf("the setup took past expires_at; the link expired before it was cached everywhere")
	}

	testenv.WaitFor(t, 8*time.Second, "the wall clock to pass expires_at", func() bool { return time.Now().After(stored) })
	m.sync()
	lookups := m.mgets(code)
	for _, s := range []*server{a, b} {
		resp := do(t, "GET", s.URL+"/"+code, nil)
		if resp.Status != http.StatusGone {
			t.Fatalf("first GET on %s after expires_at: %d Location %q, want 410", s.URL, resp.Status, resp.Header.Get("Location"))
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Location") != "" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			t.Fatalf("410 on %s: Cache-Control %q Location %q Content-Type %q, want no-store, no Location, problem+json",
				s.URL, resp.Header.Get("Cache-Control"), resp.Header.Get("Location"), resp.Header.Get("Content-Type"))
		}
		head := do(t, "HEAD", s.URL+"/"+code, nil)
		if head.Status != http.StatusGone || len(head.Body) != 0 || head.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("HEAD on %s after expires_at: %d body %q Cache-Control %q, want a bare 410 no-store",
				s.URL, head.Status, head.Body, head.Header.Get("Cache-Control"))
		}
	}
	m.sync()
	t.Logf("410s served with %d L2 lookups (0: straight from the LRUs that held the link)", m.mgets(code)-lookups)
	// The metadata of an expired link stays readable.
	if meta := do(t, "GET", a.URL+"/api/v1/links/"+code, nil); meta.Status != 200 {
		t.Fatalf("metadata of the expired link: %d", meta.Status)
	}
}
