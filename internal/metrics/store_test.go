package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/cache"
	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/metrics"
	"github.com/linkgate/linkgate/internal/store"
)

// openSQLite opens a real SQLite store in a temporary directory.
func openSQLite(t *testing.T) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, "sqlite://"+t.TempDir()+"/m.db", store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func apiKey(id string) *links.APIKey {
	return &links.APIKey{ID: id, Name: id, Hash: bytes.Repeat([]byte{1}, 32), CreatedAt: time.Now()}
}

func TestInstrumentStoreObservesEveryOp(t *testing.T) {
	ctx := context.Background()
	m := newMetrics(t, metrics.Config{})
	s := metrics.InstrumentStore(openSQLite(t), m)

	// Calls run in this order, each against the state the previous ones left;
	// errors must pass through unchanged and still be observed.
	steps := []struct {
		op   string
		call func(t *testing.T)
	}{
		{"ping", func(t *testing.T) {
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"create_link", func(t *testing.T) {
			l := &links.Link{Code: "abc1234", URL: "https://example.com/", Redirect: links.DefaultRedirect, CreatedAt: time.Now()}
			if err := s.CreateLink(ctx, l); err != nil {
				t.Fatal(err)
			}
			if l.ID == 0 {
				t.Error("CreateLink through the decorator did not set ID")
			}
		}},
		{"create_link", func(t *testing.T) { // duplicate: ECONFLICT passes through
			l := &links.Link{Code: "abc1234", URL: "https://example.org/", Redirect: links.DefaultRedirect, CreatedAt: time.Now()}
			if err := s.CreateLink(ctx, l); links.ErrorCode(err) != links.ECONFLICT {
				t.Fatalf("duplicate CreateLink: %v, want ECONFLICT", err)
			}
		}},
		{"get_link", func(t *testing.T) {
			l, err := s.GetLink(ctx, "abc1234")
			if err != nil || l.URL != "https://example.com/" {
				t.Fatalf("GetLink = %+v, %v", l, err)
			}
		}},
		{"get_link", func(t *testing.T) {
			if _, err := s.GetLink(ctx, "missing"); links.ErrorCode(err) != links.ENOTFOUND {
				t.Fatalf("GetLink(missing): %v, want ENOTFOUND", err)
			}
		}},
		{"add_clicks", func(t *testing.T) {
			if err := s.AddClicks(ctx, map[string]int64{"abc1234": 3}); err != nil {
				t.Fatal(err)
			}
		}},
		{"list_links", func(t *testing.T) {
			ls, err := s.ListLinks(ctx, links.ListParams{Limit: 10})
			if err != nil || len(ls) != 1 || ls[0].Clicks != 3 {
				t.Fatalf("ListLinks = %v, %v; want the one link with 3 clicks", ls, err)
			}
		}},
		{"delete_link", func(t *testing.T) {
			if err := s.DeleteLink(ctx, "abc1234", 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"create_api_key", func(t *testing.T) {
			if err := s.CreateAPIKey(ctx, apiKey("k1")); err != nil {
				t.Fatal(err)
			}
		}},
		{"put_api_key", func(t *testing.T) {
			if err := s.PutAPIKey(ctx, apiKey("k1")); err != nil {
				t.Fatal(err)
			}
		}},
		{"get_api_key", func(t *testing.T) {
			k, err := s.GetAPIKey(ctx, "k1")
			if err != nil || k.ID != "k1" {
				t.Fatalf("GetAPIKey = %+v, %v", k, err)
			}
		}},
	}
	seen := map[string]bool{}
	for i, step := range steps {
		seen[step.op] = true
		before := snapshot(t, m.Registry())
		step.call(t)
		got := diff(t, before, snapshot(t, m.Registry()))
		want := map[string]float64{fmt.Sprintf("linkgate_store_operation_duration_seconds_count{op=%q}", step.op): 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("step %d (%s): changed %v, want %v", i, step.op, got, want)
		}
	}
	for _, op := range metrics.StoreOps() {
		if !seen[op] {
			t.Errorf("op %s not exercised", op)
		}
	}
	// Durations are real: the histogram sum is positive.
	for _, h := range gather(t, m.Registry())["linkgate_store_operation_duration_seconds"].GetMetric() {
		if h.GetHistogram().GetSampleSum() <= 0 {
			t.Errorf("%s: sum %v, want > 0", labelString(h), h.GetHistogram().GetSampleSum())
		}
	}

	// Close is forwarded and not timed.
	before := snapshot(t, m.Registry())
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := diff(t, before, snapshot(t, m.Registry())); len(got) != 0 {
		t.Errorf("Close moved %v", got)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping after Close through the decorator succeeded; Close was not forwarded")
	}
}

func TestInstrumentStoreNilArguments(t *testing.T) {
	s := openSQLite(t)
	if got := metrics.InstrumentStore(s, nil); got != s {
		t.Error("InstrumentStore(s, nil) did not return s")
	}
	if got := metrics.InstrumentStore(nil, newMetrics(t, metrics.Config{})); got != nil {
		t.Errorf("InstrumentStore(nil, m) = %v, want nil", got)
	}
}

// TestWiringWithCache wires Metrics the way cmd/linkgate does (instrumented
// store as the cache's Source, Metrics as its Recorder, entry counts from the
// cache) and checks that one lookup path moves the expected series.
func TestWiringWithCache(t *testing.T) {
	ctx := context.Background()
	m := newMetrics(t, metrics.Config{})
	st := metrics.InstrumentStore(openSQLite(t), m)
	c, err := cache.New(cache.Config{Source: st, Recorder: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := m.SetCacheEntries(metrics.EntriesLRU, c.Len); err != nil {
		t.Fatal(err)
	}
	if err := m.SetCacheEntries(metrics.EntriesLRUNegative, c.NegativeLen); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateLink(ctx, &links.Link{Code: "wired01", URL: "https://example.com/w", Redirect: links.DefaultRedirect, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	before := snapshot(t, m.Registry())
	for range 2 { // a miss, then an L1 hit
		if _, err := c.Resolve(ctx, "wired01"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Resolve(ctx, "nothere"); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("Resolve(nothere): %v, want ENOTFOUND", err)
	}
	got := diff(t, before, snapshot(t, m.Registry()))
	want := map[string]float64{
		`linkgate_cache_requests_total{layer="lru",result="hit"}`:        1,
		`linkgate_cache_requests_total{layer="lru",result="miss"}`:       2,
		`linkgate_cache_requests_total{layer="store",result="hit"}`:      1,
		`linkgate_cache_requests_total{layer="store",result="miss"}`:     1,
		`linkgate_cache_entries{layer="lru"}`:                            1,
		`linkgate_cache_entries{layer="lru_negative"}`:                   1,
		`linkgate_store_operation_duration_seconds_count{op="get_link"}`: 2,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changed series:\n got %v\nwant %v", got, want)
	}
}
