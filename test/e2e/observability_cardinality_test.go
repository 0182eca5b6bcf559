package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// obsMaxMetricsBytes bounds the size of one /metrics answer.
const obsMaxMetricsBytes = 200 << 10

// TestObservabilityCardinalityBounded floods one instance with 120,000
// requests for paths that are all different (unknown codes, unrouted
// multi-segment paths, random query strings on the known routes) and
// requires the set of http_* and linkgate_* series on /metrics to be the same
// afterwards as after one warm-up request of each kind, and /metrics to stay
// under 200 KB: labels come from route templates and fixed sets, never from
// what clients send.
func TestObservabilityCardinalityBounded(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/card.db")
	code := s.create(t, `{"url":"https://example.com/cardinality"}`)["code"].(string)

	const seed = 6
	kinds := []struct {
		name   string
		n      int
		path   func(i int) string
		status int
	}{
		{"unknown code", 100_000, func(i int) string { return "/" + obsToken(seed, i, 10) }, 404},
		{"unrouted path", 10_000, func(i int) string { return "/a/b/c/" + obsToken(seed+1, i, 10) }, 404},
		{"redirect query", 5_000, func(i int) string { return "/" + code + "?x=" + obsToken(seed+2, i, 12) }, 302},
		{"metadata query", 5_000, func(i int) string { return "/api/v1/links/" + code + "?q=" + obsToken(seed+3, i, 12) }, 200},
	}

	// Warm up: one request of each kind, so that the series they create
	// legitimately (a route/status pair seen for the first time) exist before
	// the count.
	for _, k := range kinds {
		if r := do(t, "GET", s.URL+k.path(-1), nil); r.Status != k.status {
			t.Fatalf("warm-up %s %s: status %d, want %d: %s", k.name, k.path(-1), r.Status, k.status, r.Body)
		}
	}
	families := []string{"http_", "linkgate_"}
	before := do(t, "GET", s.URL+"/metrics", nil)
	seriesBefore := obsSeriesSet(before.Body, families...)
	valuesBefore := scrape(t, s)

	addr := strings.TrimPrefix(s.URL, "http://")
	start := time.Now()
	deadline := start.Add(45 * time.Second)
	total := 0
	for _, k := range kinds {
		res := obsBlast(addr, k.n, 32, 50, deadline, k.path)
		for _, err := range res.errs {
			t.Errorf("%s: %v", k.name, err)
		}
		if res.statuses[k.status] != k.n || len(res.statuses) != 1 {
			t.Errorf("%s: statuses %v, want %d × %d", k.name, res.statuses, k.n, k.status)
		}
		total += k.n
	}
	took := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}

	after := do(t, "GET", s.URL+"/metrics", nil)
	seriesAfter := obsSeriesSet(after.Body, families...)
	valuesAfter := scrape(t, s)
	t.Logf("%d requests in %v (%.0f/s); /metrics %d → %d bytes; http_*+linkgate_* series %d → %d (%s → %s)",
		total, took.Round(time.Millisecond), float64(total)/took.Seconds(), len(before.Body), len(after.Body),
		len(seriesBefore), len(seriesAfter), obsFamilyCounts(seriesBefore), obsFamilyCounts(seriesAfter))

	var added, removed []string
	for sr := range seriesAfter {
		if !seriesBefore[sr] {
			added = append(added, sr)
		}
	}
	for sr := range seriesBefore {
		if !seriesAfter[sr] {
			removed = append(removed, sr)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	if len(added) > 0 {
		t.Errorf("%d series appeared under load, e.g. %q", len(added), added[:min(5, len(added))])
	}
	if len(removed) > 0 {
		t.Errorf("%d series disappeared, e.g. %q", len(removed), removed[:min(5, len(removed))])
	}
	if len(after.Body) >= obsMaxMetricsBytes {
		t.Errorf("/metrics is %d bytes after the load, want under %d", len(after.Body), obsMaxMetricsBytes)
	}

	// The requests were counted, under the route templates: the load did
	// reach the instrumented handlers.
	for series, want := range map[string]float64{
		`http_requests_total{method="GET",path="/:code",service="linkgate",status_code="404"}`:              100_000,
		`http_requests_total{method="GET",path="/:code",service="linkgate",status_code="302"}`:              5_000,
		`http_requests_total{method="GET",path="/api/v1/links/:code",service="linkgate",status_code="200"}`: 5_000,
		`linkgate_redirects_total{result="not_found"}`:                                                      100_000,
		`linkgate_redirects_total{result="found"}`:                                                          5_000,
	} {
		if got := valuesAfter[series] - valuesBefore[series]; got != want {
			t.Errorf("%s grew by %v, want %v", series, got, want)
		}
	}
}

// obsFamilyCounts summarises a series set by metric family (histogram
// series under their base name), e.g. "http_requests_total:4 ...".
func obsFamilyCounts(set map[string]bool) string {
	counts := map[string]int{}
	for sr := range set {
		name, _, _ := strings.Cut(sr, "{")
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(name, suffix) && strings.Contains(name, "_seconds") {
				name = strings.TrimSuffix(name, suffix)
			}
		}
		counts[name]++
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s:%d", n, counts[n]))
	}
	return strings.Join(parts, " ")
}
