package metrics_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/ansrivas/fiberprometheus/v2"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/linkgate/linkgate/internal/cache"
	"github.com/linkgate/linkgate/internal/metrics"
	"github.com/linkgate/linkgate/internal/ratelimit"
)

func TestNewInitialisesEverySeries(t *testing.T) {
	m := newMetrics(t, metrics.Config{Version: "1.2.3"})
	reg := m.Registry()

	nDecisions := len(ratelimit.Decisions())
	if nDecisions < 4 {
		t.Fatalf("ratelimit.Decisions() = %v, want at least allowed, limited, fail_open, error", ratelimit.Decisions())
	}
	want := map[string]int{
		"linkgate_links_created_total":              1,
		"linkgate_redirects_total":                  4,
		"linkgate_ratelimit_decisions_total":        4 * nDecisions,
		"linkgate_ratelimit_backend_errors_total":   1,
		"linkgate_ratelimit_fallback_active":        1,
		"linkgate_cache_requests_total":             3 * 4,
		"linkgate_cache_entries":                    2,
		"linkgate_store_operation_duration_seconds": 9,
		"linkgate_build_info":                       1,
	}
	for name, n := range want {
		if got := seriesCount(t, reg, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
	// No other linkgate_* family exists.
	for name := range gather(t, reg) {
		if _, ok := want[name]; strings.HasPrefix(name, "linkgate_") && !ok {
			t.Errorf("unexpected family %s", name)
		}
	}
	// Every series starts at zero, except build_info.
	for key, v := range snapshot(t, reg) {
		wantV := 0.0
		if strings.HasPrefix(key, "linkgate_build_info{") {
			wantV = 1
		}
		if v != wantV {
			t.Errorf("%s = %v at start, want %v", key, v, wantV)
		}
	}
	// The Go and process collectors are registered.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if seriesCount(t, reg, name) != 1 {
			t.Errorf("%s not gathered", name)
		}
	}

	gatherAndCompare(t, reg, fmt.Sprintf(`
# HELP linkgate_build_info Always 1; the labels carry the build's version and Go version.
# TYPE linkgate_build_info gauge
linkgate_build_info{goversion=%q,version="1.2.3"} 1
# HELP linkgate_redirects_total Redirect requests by result: found, not_found, expired, error.
# TYPE linkgate_redirects_total counter
linkgate_redirects_total{result="error"} 0
linkgate_redirects_total{result="expired"} 0
linkgate_redirects_total{result="found"} 0
linkgate_redirects_total{result="not_found"} 0
`, runtime.Version()), "linkgate_build_info", "linkgate_redirects_total")

	// The label values are exactly the sets other packages define.
	got := map[string]bool{}
	for _, s := range gather(t, reg)["linkgate_cache_requests_total"].GetMetric() {
		got[labelString(s)] = true
	}
	for _, l := range []string{cache.LayerLRU, cache.LayerRedis, cache.LayerStore} {
		for _, r := range []string{cache.ResultHit, cache.ResultMiss, cache.ResultNegativeHit, cache.ResultError} {
			if !got[fmt.Sprintf("layer=%q,result=%q", l, r)] {
				t.Errorf("linkgate_cache_requests_total{layer=%q,result=%q} missing", l, r)
			}
		}
	}
	got = map[string]bool{}
	for _, s := range gather(t, reg)["linkgate_ratelimit_decisions_total"].GetMetric() {
		got[labelString(s)] = true
	}
	for _, p := range []string{"redirect", "create", "api", "keylookup"} {
		for _, d := range ratelimit.Decisions() {
			if !got[fmt.Sprintf("decision=%q,policy=%q", d, p)] {
				t.Errorf("linkgate_ratelimit_decisions_total{policy=%q,decision=%q} missing", p, d)
			}
		}
	}

	// Store histograms: every op, with the documented buckets.
	ops := map[string]bool{}
	for _, s := range gather(t, reg)["linkgate_store_operation_duration_seconds"].GetMetric() {
		ops[s.GetLabel()[0].GetValue()] = true
		var bounds []float64
		for _, b := range s.GetHistogram().GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
		}
		if fmt.Sprint(bounds) != fmt.Sprint(metrics.StoreBuckets()) {
			t.Errorf("buckets %v, want %v", bounds, metrics.StoreBuckets())
		}
	}
	for _, op := range []string{"create_link", "get_link", "delete_link", "list_links", "add_clicks",
		"create_api_key", "put_api_key", "get_api_key", "ping"} {
		if !ops[op] {
			t.Errorf("store op %q has no histogram", op)
		}
	}
}

func TestRecordersMoveExactlyTheirSeries(t *testing.T) {
	type tc struct {
		record func(m *metrics.Metrics)
		want   map[string]float64 // series → change
	}
	tests := map[string]tc{
		"LinkCreated": {
			record: func(m *metrics.Metrics) { m.LinkCreated() },
			want:   map[string]float64{`linkgate_links_created_total{}`: 1},
		},
		"BackendError twice": {
			record: func(m *metrics.Metrics) { m.BackendError(); m.BackendError() },
			want:   map[string]float64{`linkgate_ratelimit_backend_errors_total{}`: 2},
		},
		"FallbackActive true": {
			record: func(m *metrics.Metrics) { m.FallbackActive(true) },
			want:   map[string]float64{`linkgate_ratelimit_fallback_active{}`: 1},
		},
		"FallbackActive false": {
			record: func(m *metrics.Metrics) { m.FallbackActive(false) },
			want:   map[string]float64{},
		},
	}
	for _, r := range metrics.RedirectResults() {
		tests["Redirect "+r] = tc{
			record: func(m *metrics.Metrics) { m.Redirect(r) },
			want:   map[string]float64{fmt.Sprintf("linkgate_redirects_total{result=%q}", r): 1},
		}
	}
	for _, l := range []string{cache.LayerLRU, cache.LayerRedis, cache.LayerStore} {
		for _, r := range []string{cache.ResultHit, cache.ResultMiss, cache.ResultNegativeHit, cache.ResultError} {
			tests["CacheRequest "+l+" "+r] = tc{
				record: func(m *metrics.Metrics) { m.CacheRequest(l, r) },
				want:   map[string]float64{fmt.Sprintf("linkgate_cache_requests_total{layer=%q,result=%q}", l, r): 1},
			}
		}
	}
	for _, p := range metrics.Policies() {
		for _, d := range ratelimit.Decisions() {
			tests["Decision "+p+" "+d] = tc{
				record: func(m *metrics.Metrics) { m.Decision(p, d) },
				want:   map[string]float64{fmt.Sprintf("linkgate_ratelimit_decisions_total{decision=%q,policy=%q}", d, p): 1},
			}
		}
	}

	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newMetrics(t, metrics.Config{})
			before := snapshot(t, m.Registry())
			tt.record(m)
			got := diff(t, before, snapshot(t, m.Registry()))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("changed series %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUnknownLabelValuesCreateNoSeries(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	reg := m.Registry()
	before := snapshot(t, reg)
	familiesBefore := len(gather(t, reg))

	m.Redirect("")
	m.Redirect("FOUND")
	m.Redirect("moved")
	m.CacheRequest("memcached", cache.ResultHit)
	m.CacheRequest(cache.LayerLRU, "stale")
	m.CacheRequest("", "")
	m.Decision("admin", ratelimit.DecisionAllowed)
	m.Decision(metrics.PolicyRedirect, "maybe")
	m.Decision(ratelimit.DecisionAllowed, metrics.PolicyRedirect) // arguments swapped

	if got := diff(t, before, snapshot(t, reg)); len(got) != 0 {
		t.Errorf("unknown label values moved series: %v", got)
	}
	if got := len(gather(t, reg)); got != familiesBefore {
		t.Errorf("%d families, want %d", got, familiesBefore)
	}
}

func TestFallbackActiveFollowsTransitions(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	const key = "linkgate_ratelimit_fallback_active{}"
	for i, active := range []bool{false, true, true, false, true} {
		m.FallbackActive(active)
		want := 0.0
		if active {
			want = 1
		}
		if got := snapshot(t, m.Registry())[key]; got != want {
			t.Fatalf("step %d: FallbackActive(%v) left the gauge at %v, want %v", i, active, got, want)
		}
	}
}

func TestCacheEntries(t *testing.T) {
	positive, negative := 7, 3
	m := newMetrics(t, metrics.Config{CacheEntries: map[string]func() int{
		metrics.EntriesLRU: func() int { return positive },
	}})
	entries := func() string {
		s := snapshot(t, m.Registry())
		return fmt.Sprintf("lru=%v lru_negative=%v",
			s[`linkgate_cache_entries{layer="lru"}`], s[`linkgate_cache_entries{layer="lru_negative"}`])
	}
	if got := entries(); got != "lru=7 lru_negative=0" {
		t.Errorf("from Config: %s", got)
	}
	// Read at scrape time, not copied at registration.
	positive = 9
	if err := m.SetCacheEntries(metrics.EntriesLRUNegative, func() int { return negative }); err != nil {
		t.Fatal(err)
	}
	if got := entries(); got != "lru=9 lru_negative=3" {
		t.Errorf("after SetCacheEntries: %s", got)
	}
	if err := m.SetCacheEntries(metrics.EntriesLRU, nil); err != nil {
		t.Fatal(err)
	}
	if got := entries(); got != "lru=0 lru_negative=3" {
		t.Errorf("after SetCacheEntries(nil): %s", got)
	}

	for _, layer := range []string{cache.LayerRedis, cache.LayerStore, "", "LRU"} {
		if err := m.SetCacheEntries(layer, func() int { return 1 }); err == nil {
			t.Errorf("SetCacheEntries(%q) succeeded, want an error", layer)
		}
		if _, err := metrics.New(metrics.Config{CacheEntries: map[string]func() int{layer: func() int { return 1 }}}); err == nil {
			t.Errorf("New with CacheEntries[%q] succeeded, want an error", layer)
		}
	}
	if got := seriesCount(t, m.Registry(), "linkgate_cache_entries"); got != 2 {
		t.Errorf("%d linkgate_cache_entries series, want 2", got)
	}
}

func TestBuildInfoVersion(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	if _, ok := snapshot(t, m.Registry())[fmt.Sprintf(`linkgate_build_info{goversion=%q,version="unknown"}`, runtime.Version())]; !ok {
		t.Errorf("empty Version: build_info series %v", gather(t, m.Registry())["linkgate_build_info"].GetMetric())
	}
	if _, err := metrics.New(metrics.Config{Version: "v\xff"}); err == nil {
		t.Error("New accepted a Version that is not UTF-8")
	}
}

func TestInstancesAreIndependent(t *testing.T) {
	a := newMetrics(t, metrics.Config{Version: "a"})
	b := newMetrics(t, metrics.Config{Version: "b"})
	a.Redirect(metrics.RedirectFound)
	a.LinkCreated()
	if s := snapshot(t, b.Registry()); s[`linkgate_redirects_total{result="found"}`] != 0 || s["linkgate_links_created_total{}"] != 0 {
		t.Error("recording on one Metrics moved another's series")
	}
	for name := range gather(t, prometheus.DefaultGatherer) {
		if strings.HasPrefix(name, "linkgate_") {
			t.Errorf("%s registered on the global default registry", name)
		}
	}
}

func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *metrics.Metrics
	m.LinkCreated()
	m.Redirect(metrics.RedirectFound)
	m.CacheRequest(cache.LayerLRU, cache.ResultHit)
	m.Decision(metrics.PolicyAPI, ratelimit.DecisionAllowed)
	m.BackendError()
	m.FallbackActive(true)
	if err := m.SetCacheEntries(metrics.EntriesLRU, func() int { return 1 }); err != nil {
		t.Errorf("SetCacheEntries on nil: %v", err)
	}
}

func TestConcurrentRecording(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	const workers, per = 8, 2000
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range per {
				m.Redirect(metrics.RedirectFound)
				m.CacheRequest(cache.LayerLRU, cache.ResultHit)
				m.Decision(metrics.PolicyRedirect, ratelimit.DecisionAllowed)
				m.FallbackActive(i%2 == 0)
			}
		})
	}
	// Scrape while recording.
	for range 5 {
		_ = snapshot(t, m.Registry())
	}
	wg.Wait()
	s := snapshot(t, m.Registry())
	for _, key := range []string{
		`linkgate_redirects_total{result="found"}`,
		`linkgate_cache_requests_total{layer="lru",result="hit"}`,
		`linkgate_ratelimit_decisions_total{decision="allowed",policy="redirect"}`,
	} {
		if s[key] != workers*per {
			t.Errorf("%s = %v, want %d", key, s[key], workers*per)
		}
	}
}

// scrape serves GET /metrics through a Fiber app and returns the response.
func scrape(t *testing.T, h fiber.Handler, header map[string]string) (status int, contentType, encoding string, body []byte) {
	t.Helper()
	app := fiber.New()
	app.Get("/metrics", h)
	req := httptest.NewRequest(fiber.MethodGet, "/metrics", nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header.Get(fiber.HeaderContentType), resp.Header.Get(fiber.HeaderContentEncoding), body
}

// parseText parses a text exposition or fails the test.
func parseText(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return mfs
}

func TestHandlerServesTextExposition(t *testing.T) {
	m := newMetrics(t, metrics.Config{Version: "1.2.3"})
	m.Redirect(metrics.RedirectNotFound)

	tests := map[string]map[string]string{
		"no Accept": nil,
		// What Prometheus sends: OpenMetrics is preferred but not offered.
		"Prometheus Accept": {"Accept": "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"},
	}
	for name, header := range tests {
		t.Run(name, func(t *testing.T) {
			status, ct, _, body := scrape(t, m.Handler(), header)
			if status != fiber.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			if !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
				t.Errorf("Content-Type %q, want text/plain; version=0.0.4", ct)
			}
			want := fmt.Sprintf("linkgate_build_info{goversion=%q,version=\"1.2.3\"} 1\n", runtime.Version())
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("body lacks %q", want)
			}
			mfs := parseText(t, body)
			for _, name := range []string{"linkgate_redirects_total", "linkgate_store_operation_duration_seconds", "go_goroutines", "promhttp_metric_handler_requests_total"} {
				if _, ok := mfs[name]; !ok {
					t.Errorf("%s not served", name)
				}
			}
			for _, s := range mfs["linkgate_redirects_total"].GetMetric() {
				want := 0.0
				if labelString(s) == `result="not_found"` {
					want = 1
				}
				if s.GetCounter().GetValue() != want {
					t.Errorf("served linkgate_redirects_total{%s} %v, want %v", labelString(s), s.GetCounter().GetValue(), want)
				}
			}
		})
	}
}

func TestHandlerCompresses(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	status, _, enc, body := scrape(t, m.Handler(), map[string]string{"Accept-Encoding": "gzip"})
	if status != fiber.StatusOK || enc != "gzip" {
		t.Fatalf("status %d, Content-Encoding %q; want 200 gzip", status, enc)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseText(t, plain)["linkgate_build_info"]; !ok {
		t.Error("gzipped body lacks linkgate_build_info")
	}
}

// failingCollector fails every collection.
type failingCollector struct{ desc *prometheus.Desc }

func (f failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("backend down"))
}

func TestHandlerContinuesOnCollectorError(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	m := newMetrics(t, metrics.Config{Logger: logger})
	if err := m.Registry().Register(failingCollector{prometheus.NewDesc("test_failing", "fails", nil, nil)}); err != nil {
		t.Fatal(err)
	}

	status, _, _, body := scrape(t, m.Handler(), nil)
	if status != fiber.StatusOK {
		t.Fatalf("status %d, want 200 (ContinueOnError): %s", status, body)
	}
	mfs := parseText(t, body)
	if _, ok := mfs["linkgate_build_info"]; !ok {
		t.Error("a failing collector hid the other metrics")
	}
	mu.Lock()
	logged := logs.String()
	mu.Unlock()
	if !strings.Contains(logged, "backend down") {
		t.Errorf("collector error not logged; logs: %q", logged)
	}
	// The next scrape reports the error counted by the first.
	_, _, _, body = scrape(t, m.Handler(), nil)
	var counted float64
	for _, s := range parseText(t, body)["promhttp_metric_handler_errors_total"].GetMetric() {
		if labelString(s) == `cause="gathering"` {
			counted = s.GetCounter().GetValue()
		}
	}
	if counted < 1 {
		t.Errorf("promhttp_metric_handler_errors_total{cause=\"gathering\"} = %v, want >= 1", counted)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// gone is a domain error that only the application's error handler turns
// into a status (410), as links.Error and problem.Details are.
type gone struct{}

func (gone) Error() string { return "gone" }

// TestFiberPrometheusOnTheSameRegistry checks the wiring httpserver uses:
// fiberprometheus registers its HTTP metrics on Metrics' registry without a
// clash, and it records the status the error handler renders only when it
// runs outside the middleware that renders errors.
func TestFiberPrometheusOnTheSameRegistry(t *testing.T) {
	errorHandler := func(c *fiber.Ctx, err error) error {
		if _, ok := err.(gone); ok {
			return c.Status(fiber.StatusGone).SendString("gone")
		}
		return fiber.DefaultErrorHandler(c, err)
	}
	renderErrors := func(c *fiber.Ctx) error { // like httpserver's requestLog
		if err := c.Next(); err != nil {
			return errorHandler(c, err)
		}
		return nil
	}
	build := func(t *testing.T, promOutside bool) (*fiber.App, *metrics.Metrics) {
		m := newMetrics(t, metrics.Config{})
		fp := fiberprometheus.NewWithRegistry(m.Registry(), "linkgate", "http", "", nil)
		fp.SetSkipPaths([]string{"/metrics"})
		app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
		if promOutside {
			app.Use(fp.Middleware, renderErrors)
		} else {
			app.Use(renderErrors, fp.Middleware)
		}
		app.Get("/metrics", m.Handler())
		app.Get("/:code", func(c *fiber.Ctx) error { return gone{} })
		return app, m
	}
	statuses := func(t *testing.T, app *fiber.App, m *metrics.Metrics) map[string]float64 {
		resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/abc1234", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != fiber.StatusGone {
			t.Fatalf("GET /abc1234: %d, want 410", resp.StatusCode)
		}
		// A scrape through the app is skipped (SetSkipPaths).
		resp, err = app.Test(httptest.NewRequest(fiber.MethodGet, "/metrics", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != fiber.StatusOK {
			t.Fatalf("GET /metrics: %d", resp.StatusCode)
		}
		out := map[string]float64{}
		for _, s := range gather(t, m.Registry())["http_requests_total"].GetMetric() {
			out[labelString(s)] = s.GetCounter().GetValue()
		}
		return out
	}

	t.Run("outside the error renderer", func(t *testing.T) {
		app, m := build(t, true)
		got := statuses(t, app, m)
		want := map[string]float64{`method="GET",path="/:code",service="linkgate",status_code="410"`: 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("http_requests_total %v, want %v", got, want)
		}
		if seriesCount(t, m.Registry(), "linkgate_build_info") != 1 {
			t.Error("linkgate metrics missing next to fiberprometheus'")
		}
	})
	t.Run("inside the error renderer records 500", func(t *testing.T) {
		// fiberprometheus v2.16.0 maps any error that is not a *fiber.Error
		// to 500; if this starts failing, the ordering advice is obsolete.
		app, m := build(t, false)
		got := statuses(t, app, m)
		want := map[string]float64{`method="GET",path="/:code",service="linkgate",status_code="500"`: 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("http_requests_total %v, want %v", got, want)
		}
	})
}
