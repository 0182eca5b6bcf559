package deploy

import (
	"fmt"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ansrivas/fiberprometheus/v2"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/linkgate/linkgate/internal/metrics"
)

// metricInfo describes one metric the rules and the dashboard may select:
// its labels besides job and instance (which every scraped series has), and
// for labels with a closed set of values, that set.
type metricInfo struct {
	labels []string
	enums  map[string][]string
}

// designMetrics are the application metric names DESIGN.md section 8 fixes
// (histograms by their _bucket series). The rules and the dashboard are
// written against them; TestAppExportsDesignMetrics holds the application to
// them.
func designMetrics() []string {
	return []string{
		"http_requests_total", "http_request_duration_seconds_bucket", "http_requests_in_progress_total",
		"linkgate_links_created_total", "linkgate_redirects_total", "linkgate_ratelimit_decisions_total",
		"linkgate_ratelimit_backend_errors_total", "linkgate_ratelimit_fallback_active",
		"linkgate_cache_requests_total", "linkgate_cache_entries",
		"linkgate_store_operation_duration_seconds_bucket", "linkgate_build_info",
		"go_goroutines", "go_memstats_heap_inuse_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes",
	}
}

// catalogue lists every metric the rules and dashboard may use: what the
// application's registry exports (appCatalogue), plus up and the nginx and
// Redis exporters' metrics, which no test here can produce.
func catalogue(t *testing.T) map[string]metricInfo {
	t.Helper()
	m := appCatalogue(t)
	for _, name := range []string{"up", "nginx_http_requests_total", "nginx_connections_active", "nginx_up",
		"redis_up", "redis_memory_used_bytes"} {
		m[name] = metricInfo{}
	}
	return m
}

// appCatalogue builds the application's registry as cmd/linkgate does
// (internal/metrics, with fiberprometheus registered on it as
// internal/httpserver does), serves one request so that the HTTP series
// exist, and describes every metric gathered. linkgate initialises every
// label combination of its own metrics at start, so their label values are
// closed sets; http_* labels (route, status) are open.
func appCatalogue(t *testing.T) map[string]metricInfo {
	t.Helper()
	m, err := metrics.New(metrics.Config{Version: "deploy-test"})
	if err != nil {
		t.Fatalf("metrics.New: %v", err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(fiberprometheus.NewWithRegistry(m.Registry(), "linkgate", "http", "", nil).Middleware)
	app.Get("/:code", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNotFound) })
	resp, err := app.Test(httptest.NewRequest("GET", "/abc123", nil), -1)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	resp.Body.Close()

	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]metricInfo{}
	for _, mf := range mfs {
		info := metricInfo{enums: map[string][]string{}}
		for i, metric := range mf.GetMetric() {
			for _, lp := range metric.GetLabel() {
				if i == 0 {
					info.labels = append(info.labels, lp.GetName())
				}
				if strings.HasPrefix(mf.GetName(), "linkgate_") && !contains(info.enums[lp.GetName()], lp.GetValue()) {
					info.enums[lp.GetName()] = append(info.enums[lp.GetName()], lp.GetValue())
				}
			}
		}
		sort.Strings(info.labels)
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			out[mf.GetName()+"_count"] = info
			out[mf.GetName()+"_sum"] = info
			out[mf.GetName()+"_bucket"] = metricInfo{labels: append(append([]string{}, info.labels...), "le"), enums: info.enums}
			continue
		}
		out[mf.GetName()] = info
	}
	return out
}

// histogramBuckets returns the bucket upper bounds of a gathered histogram.
func histogramBuckets(t *testing.T, reg *prometheus.Registry, name string) []float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			var out []float64
			for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
				out = append(out, b.GetUpperBound())
			}
			return out
		}
	}
	t.Fatalf("no histogram %s gathered", name)
	return nil
}

// checkSelectors parses expr and reports every vector selector that names a
// metric outside known, uses a label the metric does not have, or compares a
// closed-set label with a value outside the set. known maps extra names (for
// example recording rules) to their labels.
func checkSelectors(cat, extra map[string]metricInfo, expr string) []string {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("parse: %v", err)}
	}
	// A regex of literal alternatives only, such as "hit|negative_hit", can be
	// checked against a closed set of values.
	simpleAlternation := regexp.MustCompile(`^[a-z_]+(\|[a-z_]+)*$`)
	known := func(name string) (metricInfo, bool) {
		if info, ok := extra[name]; ok {
			return info, true
		}
		info, ok := cat[name]
		return info, ok
	}
	var problems []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		info, ok := known(vs.Name)
		if !ok {
			problems = append(problems, fmt.Sprintf("unknown metric %q", vs.Name))
			return nil
		}
		allowed := map[string]bool{"job": true, "instance": true, labels.MetricName: true}
		for _, l := range info.labels {
			allowed[l] = true
		}
		for _, m := range vs.LabelMatchers {
			if !allowed[m.Name] {
				problems = append(problems, fmt.Sprintf("%s has no label %q", vs.Name, m.Name))
				continue
			}
			enum, closed := info.enums[m.Name]
			if !closed {
				continue
			}
			var values []string
			switch {
			case m.Type == labels.MatchEqual || m.Type == labels.MatchNotEqual:
				values = []string{m.Value}
			case simpleAlternation.MatchString(m.Value):
				values = strings.Split(m.Value, "|")
			}
			for _, v := range values {
				if !contains(enum, v) {
					problems = append(problems, fmt.Sprintf("%s{%s} is never %q (values: %s)", vs.Name, m.Name, v, strings.Join(enum, ", ")))
				}
			}
		}
		return nil
	})
	return problems
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCheckSelectorsCatchesMistakes(t *testing.T) {
	t.Parallel()
	cat := catalogue(t)
	cases := map[string]struct {
		expr string
		want string // substring of the one expected problem; empty for none
	}{
		"valid":            {expr: `sum by (result) (rate(linkgate_redirects_total{job="linkgate",result=~"found|expired"}[5m]))`},
		"typo in name":     {expr: `rate(linkgate_redirect_total[5m])`, want: `unknown metric "linkgate_redirect_total"`},
		"unknown label":    {expr: `http_requests_total{status="500"}`, want: `has no label "status"`},
		"value not in set": {expr: `linkgate_cache_requests_total{layer="memcached"}`, want: `never "memcached"`},
		"regex part":       {expr: `linkgate_cache_requests_total{result=~"hit|hits"}`, want: `never "hits"`},
		"bucket has le":    {expr: `http_request_duration_seconds_bucket{le="0.1"}`},
		"count has no le":  {expr: `http_request_duration_seconds_count{le="0.1"}`, want: `has no label "le"`},
		"syntax":           {expr: `rate(up[5m]`, want: "parse"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := checkSelectors(cat, nil, tc.expr)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("problems %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Fatalf("problems %q, want one containing %q", got, tc.want)
			}
		})
	}
}

// TestAppExportsDesignMetrics holds the application's registry to the names
// DESIGN.md section 8 fixes, which the rules and dashboard use; checks the
// labels the rules depend on; and requires the 100 ms bucket the latency SLO
// counts requests under.
func TestAppExportsDesignMetrics(t *testing.T) {
	t.Parallel()
	cat := appCatalogue(t)
	for _, name := range designMetrics() {
		if _, ok := cat[name]; !ok {
			t.Errorf("the application exports no %s (it exports %v)", name, keys(cat))
		}
	}
	for name, want := range map[string][]string{
		"http_requests_total":                             {"method", "path", "service", "status_code"},
		"http_request_duration_seconds_count":             {"method", "path", "service", "status_code"},
		"http_requests_in_progress_total":                 {"method", "service"},
		"linkgate_redirects_total":                        {"result"},
		"linkgate_ratelimit_decisions_total":              {"decision", "policy"},
		"linkgate_cache_requests_total":                   {"layer", "result"},
		"linkgate_cache_entries":                          {"layer"},
		"linkgate_store_operation_duration_seconds_count": {"op"},
	} {
		if got := cat[name].labels; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s labels %v, want %v", name, got, want)
		}
	}
	for name, values := range map[string][]string{
		"linkgate_redirects_total/result":           {"found", "not_found", "expired", "error"},
		"linkgate_ratelimit_decisions_total/policy": {"redirect", "create", "api"},
		"linkgate_cache_requests_total/layer":       {"lru", "redis", "store"},
		"linkgate_cache_requests_total/result":      {"hit", "miss", "negative_hit", "error"},
	} {
		metric, label, _ := strings.Cut(name, "/")
		for _, v := range values {
			if !contains(cat[metric].enums[label], v) {
				t.Errorf("%s{%s} never %q at start (has %v): the rules and dashboard count on it", metric, label, v, cat[metric].enums[label])
			}
		}
	}
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fp := fiberprometheus.NewWithRegistry(m.Registry(), "linkgate", "http", "", nil)
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(fp.Middleware)
	app.Get("/", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusOK) })
	app.Get("/x", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusOK) })
	resp, err := app.Test(httptest.NewRequest("GET", "/x", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !contains(floatStrings(histogramBuckets(t, m.Registry(), "http_request_duration_seconds")), "0.1") {
		t.Error(`http_request_duration_seconds has no le="0.1" bucket: the latency SLO rules count requests under it`)
	}
}

func floatStrings(fs []float64) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
