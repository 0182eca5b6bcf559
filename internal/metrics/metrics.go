// Package metrics owns linkgate's Prometheus registry and implements the
// recorder interfaces other packages declare (cache.Metrics,
// ratelimit.Recorder) plus the handlers' counters, and a store decorator that
// times every Store call.
//
// New makes one prometheus.NewRegistry (never the global default registry)
// with the Go and process collectors and every linkgate_* metric:
//
//	linkgate_links_created_total                         counter
//	linkgate_redirects_total{result}                     counter: found, not_found, expired, error
//	linkgate_ratelimit_decisions_total{policy,decision}  counter: Policies() × ratelimit.Decisions()
//	linkgate_ratelimit_backend_errors_total              counter
//	linkgate_ratelimit_fallback_active                   gauge, 0 or 1
//	linkgate_cache_requests_total{layer,result}          counter: lru, redis, store × hit, miss, negative_hit, error
//	linkgate_cache_entries{layer}                        gauge read at scrape time: lru, lru_negative
//	linkgate_store_operation_duration_seconds{op}        histogram, 0.1 ms to 1 s buckets
//	linkgate_build_info{version,goversion}               gauge, always 1
//
// The /metrics handler adds promhttp_metric_handler_requests_total,
// promhttp_metric_handler_requests_in_flight and
// promhttp_metric_handler_errors_total. HTTP RED metrics are not made here:
// httpserver registers fiberprometheus on Registry.
//
// Labels are bounded: every label combination exists, at zero, from New on,
// so dashboards and rate() see every series from the first scrape. A recorder
// call with a label value outside these sets is dropped: it creates no series
// and moves no counter (a typo in a caller must not grow cardinality; the
// tests of each caller pin the values it passes).
//
// linkgate_cache_entries has no "redis" series: the shared cache's size is not
// known cheaply (DBSIZE counts every namespace in the database, and SCAN is
// too costly for a scrape), so only the in-process L1 is reported.
//
// Concurrency: every method of *Metrics, and of the Store InstrumentStore
// returns, is safe for concurrent use. The recorder methods are called on the request
// path; they look their series up in fixed arrays resolved at New (no label
// hashing, no allocation) and only do atomic adds.
package metrics

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkgate/linkgate/internal/cache"
	"github.com/linkgate/linkgate/internal/ratelimit"
)

// Namespace prefixes every metric this package defines.
const Namespace = "linkgate"

// Redirect results, the label values of linkgate_redirects_total, passed to
// Metrics.Redirect.
const (
	RedirectFound    = "found"     // the link exists and was followed
	RedirectNotFound = "not_found" // no such code (404)
	RedirectExpired  = "expired"   // the link expired (410)
	RedirectError    = "error"     // the lookup failed (500)
)

// RedirectResults returns every redirect result, in a stable order.
func RedirectResults() []string {
	return []string{RedirectFound, RedirectNotFound, RedirectExpired, RedirectError}
}

// Rate-limit policy names, the policy label values of
// linkgate_ratelimit_decisions_total. The ratelimit.Policy values linkgate
// builds must carry these names (ratelimit.ParsePolicy(PolicyCreate, spec)),
// or their decisions are dropped.
const (
	PolicyRedirect  = "redirect"
	PolicyCreate    = "create"
	PolicyAPI       = "api"
	PolicyKeyLookup = "keylookup" // API keys read from the store, per client IP
)

// Policies returns every rate-limit policy name, in a stable order.
func Policies() []string { return []string{PolicyRedirect, PolicyCreate, PolicyAPI, PolicyKeyLookup} }

// Layers of linkgate_cache_entries, the keys of Config.CacheEntries and of
// SetCacheEntries.
const (
	EntriesLRU         = cache.LayerLRU // positive entries in the in-process L1 (cache.Cache.Len)
	EntriesLRUNegative = "lru_negative" // negative entries in L1 (cache.Cache.NegativeLen)
)

// EntryLayers returns every linkgate_cache_entries layer, in a stable order.
func EntryLayers() []string { return []string{EntriesLRU, EntriesLRUNegative} }

// cacheLayers and cacheResults are the label values of
// linkgate_cache_requests_total; the constants live in package cache.
func cacheLayers() []string { return []string{cache.LayerLRU, cache.LayerRedis, cache.LayerStore} }

func cacheResults() []string {
	return []string{cache.ResultHit, cache.ResultMiss, cache.ResultNegativeHit, cache.ResultError}
}

// StoreBuckets returns the bucket upper bounds of
// linkgate_store_operation_duration_seconds, in seconds: store calls from
// 0.1 ms (an SQLite read from the page cache) to 1 s (a stalled PostgreSQL);
// slower calls land in +Inf.
func StoreBuckets() []float64 {
	return []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
}

// Config configures New.
type Config struct {
	// Version is the build's version, the version label of
	// linkgate_build_info (the goversion label is runtime.Version()).
	//
	// Optional. Default: "unknown"
	Version string

	// CacheEntries maps a linkgate_cache_entries layer (EntriesLRU,
	// EntriesLRUNegative) to a function returning its current number of
	// entries, called at scrape time; it must be safe for concurrent use and
	// cheap. Any other key is an error. Layers without a function report 0
	// until SetCacheEntries gives them one (the cache is usually built after
	// Metrics, since it takes Metrics as its recorder).
	//
	// Optional. Default: nil
	CacheEntries map[string]func() int

	// Logger receives errors met while serving /metrics (a collector that
	// failed; the scrape still gets every other metric).
	//
	// Optional. Default: errors are counted in
	// promhttp_metric_handler_errors_total but not logged.
	Logger *slog.Logger
}

// Metrics is the registry and the recorders. Build it with New. The recorder
// methods (LinkCreated, Redirect, CacheRequest, Decision, BackendError,
// FallbackActive) of a nil *Metrics record nothing.
type Metrics struct {
	reg     *prometheus.Registry
	handler fiber.Handler

	linksCreated prometheus.Counter
	redirects    labelIndex
	redirectsC   []prometheus.Counter // by redirects index

	decisions counterGrid // policy × decision

	backendErrors prometheus.Counter
	fallback      prometheus.Gauge

	cacheReq counterGrid // layer × result

	entries [2]atomic.Pointer[func() int] // by EntryLayers index

	storeOps [numOps]prometheus.Observer // by op
}

// Interfaces implemented by *Metrics.
var (
	_ cache.Metrics      = (*Metrics)(nil)
	_ ratelimit.Recorder = (*Metrics)(nil)
)

// New builds the registry and registers every collector. It returns an error
// when cfg is invalid (an unknown CacheEntries layer, a Version that is not
// valid UTF-8) or a collector cannot be registered.
func New(cfg Config) (*Metrics, error) {
	if cfg.Version == "" {
		cfg.Version = "unknown"
	}
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		redirects: labelIndex(RedirectResults()),
	}
	for layer, fn := range cfg.CacheEntries {
		if err := m.SetCacheEntries(layer, fn); err != nil {
			return nil, fmt.Errorf("new metrics: %w", err)
		}
	}

	m.linksCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "links_created_total",
		Help: "Links created (API and seed-compatible routes).",
	})

	redirects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "redirects_total",
		Help: "Redirect requests by result: found, not_found, expired, error.",
	}, []string{"result"})
	for _, r := range m.redirects {
		m.redirectsC = append(m.redirectsC, redirects.WithLabelValues(r))
	}

	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "ratelimit_decisions_total",
		Help: "Rate-limit middleware decisions by policy and decision (allowed, limited, fail_open, error).",
	}, []string{"policy", "decision"})
	m.decisions = newCounterGrid(decisions, Policies(), ratelimit.Decisions())

	m.backendErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "ratelimit_backend_errors_total",
		Help: "Failed or timed-out calls from the rate limiter to its shared backend (Redis).",
	})
	m.fallback = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "ratelimit_fallback_active",
		Help: "1 while rate-limit decisions bypass Redis (circuit breaker open or probing), else 0.",
	})

	cacheReq := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "cache_requests_total",
		Help: "Link lookups by cache layer (lru, redis, store) and result (hit, miss, negative_hit, error).",
	}, []string{"layer", "result"})
	m.cacheReq = newCounterGrid(cacheReq, cacheLayers(), cacheResults())

	collectorsToRegister := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.linksCreated, redirects, decisions, m.backendErrors, m.fallback, cacheReq,
	}

	for i, layer := range EntryLayers() {
		slot := &m.entries[i]
		collectorsToRegister = append(collectorsToRegister, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "cache_entries",
			Help:        "Entries in the in-process cache: lru (links) and lru_negative (known-missing codes).",
			ConstLabels: prometheus.Labels{"layer": layer},
		}, func() float64 {
			if fn := slot.Load(); fn != nil {
				return float64((*fn)())
			}
			return 0
		}))
	}

	storeOps := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "store_operation_duration_seconds",
		Help:    "Duration of store (database) calls by operation, errors included.",
		Buckets: StoreBuckets(),
	}, []string{"op"})
	for op, name := range StoreOps() {
		m.storeOps[op] = storeOps.WithLabelValues(name)
	}

	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels carry the build's version and Go version.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)

	collectorsToRegister = append(collectorsToRegister, storeOps, buildInfo)
	for _, c := range collectorsToRegister {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("new metrics: register: %w", err)
		}
	}

	opts := promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg, // promhttp_metric_handler_errors_total
	}
	if cfg.Logger != nil {
		opts.ErrorLog = slogPrintln{cfg.Logger}
	}
	// InstrumentMetricHandler registers promhttp_metric_handler_requests_total
	// and _in_flight; it runs once here, so Handler can be called any number
	// of times.
	m.handler = adaptor.HTTPHandler(promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, opts)))
	return m, nil
}

// Registry returns the registry holding every metric. Register other
// collectors on it (fiberprometheus.NewWithRegistry) and gather it in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns the Fiber handler serving the registry in the Prometheus
// text exposition format (text/plain; version=0.0.4, gzip or zstd when the
// scraper accepts it). OpenMetrics is not offered: linkgate has no exemplars,
// and OpenMetrics would rename histogram "le" values ("1" becomes "1.0"). A
// collector that fails is logged and counted, and the scrape still returns
// everything else. Every call returns the same handler.
func (m *Metrics) Handler() fiber.Handler { return m.handler }

// SetCacheEntries makes fn the source of linkgate_cache_entries{layer},
// called at every scrape; fn must be safe for concurrent use and cheap. A nil
// fn makes the layer report 0 again. layer must be EntriesLRU or
// EntriesLRUNegative; any other is an error. Safe to call while scrapes run;
// a no-op on a nil *Metrics.
func (m *Metrics) SetCacheEntries(layer string, fn func() int) error {
	if m == nil {
		return nil
	}
	i := labelIndex(EntryLayers()).of(layer)
	if i < 0 {
		return fmt.Errorf("cache entries: unknown layer %q (want %q or %q)", layer, EntriesLRU, EntriesLRUNegative)
	}
	if fn == nil {
		m.entries[i].Store(nil)
		return nil
	}
	m.entries[i].Store(&fn)
	return nil
}

// LinkCreated counts one created link (linkgate_links_created_total).
func (m *Metrics) LinkCreated() {
	if m == nil {
		return
	}
	m.linksCreated.Inc()
}

// Redirect counts one redirect request with result (RedirectFound,
// RedirectNotFound, RedirectExpired, RedirectError); any other result is
// dropped.
func (m *Metrics) Redirect(result string) {
	if m == nil {
		return
	}
	if i := m.redirects.of(result); i >= 0 {
		m.redirectsC[i].Inc()
	}
}

// CacheRequest implements cache.Metrics: it counts one lookup at layer
// (cache.LayerLRU, LayerRedis, LayerStore) with result (cache.ResultHit,
// ResultMiss, ResultNegativeHit, ResultError). Other values are dropped.
func (m *Metrics) CacheRequest(layer, result string) {
	if m == nil {
		return
	}
	m.cacheReq.inc(layer, result)
}

// Decision implements ratelimit.Recorder: it counts one decision of policy
// (Policies()) with decision (ratelimit.Decisions()). Other values are
// dropped.
func (m *Metrics) Decision(policy, decision string) {
	if m == nil {
		return
	}
	m.decisions.inc(policy, decision)
}

// BackendError implements ratelimit.Recorder: it counts one failed call to
// the limiter's shared backend.
func (m *Metrics) BackendError() {
	if m == nil {
		return
	}
	m.backendErrors.Inc()
}

// FallbackActive implements ratelimit.Recorder: it sets
// linkgate_ratelimit_fallback_active to 1 when active, else 0.
func (m *Metrics) FallbackActive(active bool) {
	if m == nil {
		return
	}
	if active {
		m.fallback.Set(1)
	} else {
		m.fallback.Set(0)
	}
}

// labelIndex is a small fixed set of label values. For the handful of values
// a label has here, a linear scan of string comparisons (length first) is
// faster than hashing the value into a map, and it allocates nothing.
type labelIndex []string

// of returns v's position, or -1 when v is not in the set.
func (ix labelIndex) of(v string) int {
	for i, s := range ix {
		if s == v {
			return i
		}
	}
	return -1
}

// counterGrid is a two-label counter vector with every child resolved up
// front, so that counting is two labelIndex scans and an Inc.
type counterGrid struct {
	rows, cols labelIndex
	c          []prometheus.Counter // row index × len(cols) + column index
}

func newCounterGrid(vec *prometheus.CounterVec, rows, cols []string) counterGrid {
	g := counterGrid{rows: rows, cols: cols}
	for _, r := range rows {
		for _, c := range cols {
			g.c = append(g.c, vec.WithLabelValues(r, c))
		}
	}
	return g
}

// inc counts one for (row, col); values outside the sets are dropped.
func (g *counterGrid) inc(row, col string) {
	r, c := g.rows.of(row), g.cols.of(col)
	if r >= 0 && c >= 0 {
		g.c[r*len(g.cols)+c].Inc()
	}
}

// slogPrintln adapts a slog.Logger to promhttp.Logger.
type slogPrintln struct{ l *slog.Logger }

func (p slogPrintln) Println(v ...any) { p.l.Error("serve metrics", "err", fmt.Sprint(v...)) }
