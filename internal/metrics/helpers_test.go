package metrics_test

// prometheus/client_golang/prometheus/testutil needs
// github.com/kylelemons/godebug, which go.sum does not hold, so these helpers
// read the registry through Gather and the dto types instead.

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/linkgate/linkgate/internal/metrics"
)

// newMetrics builds a Metrics or fails the test.
func newMetrics(tb testing.TB, cfg metrics.Config) *metrics.Metrics {
	tb.Helper()
	m, err := metrics.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return m
}

// gather returns g's families by name.
func gather(tb testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("Gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// seriesCount returns the number of series of the family name (0 when absent).
func seriesCount(tb testing.TB, g prometheus.Gatherer, name string) int {
	tb.Helper()
	return len(gather(tb, g)[name].GetMetric())
}

// labelString renders a series' labels as a="x",b="y", sorted by name.
func labelString(m *dto.Metric) string {
	var parts []string
	for _, lp := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// snapshot returns the value of every linkgate_* series, keyed
// name{labels}; a histogram contributes its sample count as name_count{labels}.
func snapshot(tb testing.TB, g prometheus.Gatherer) map[string]float64 {
	tb.Helper()
	out := map[string]float64{}
	for name, mf := range gather(tb, g) {
		if !strings.HasPrefix(name, metrics.Namespace+"_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := name + "{" + labelString(m) + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name+"_count{"+labelString(m)+"}"] = float64(m.GetHistogram().GetSampleCount())
			default:
				tb.Fatalf("%s: unexpected metric type %v", key, mf.GetType())
			}
		}
	}
	return out
}

// diff returns the series whose value differs between before and after
// (after minus before), and fails when the set of series changed.
func diff(tb testing.TB, before, after map[string]float64) map[string]float64 {
	tb.Helper()
	if !slices.Equal(slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after))) {
		tb.Fatalf("series set changed:\nbefore %v\nafter  %v",
			slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// exposition renders the named families of g in the text format, like
// testutil.GatherAndCompare does before comparing.
func exposition(tb testing.TB, g prometheus.Gatherer, names ...string) string {
	tb.Helper()
	all := gather(tb, g)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, name := range slices.Sorted(slices.Values(names)) {
		mf, ok := all[name]
		if !ok {
			tb.Fatalf("family %s not gathered", name)
		}
		if err := enc.Encode(mf); err != nil {
			tb.Fatalf("encode %s: %v", name, err)
		}
	}
	return buf.String()
}

// gatherAndCompare fails unless the named families of g render as want.
func gatherAndCompare(tb testing.TB, g prometheus.Gatherer, want string, names ...string) {
	tb.Helper()
	got := exposition(tb, g, names...)
	if strings.TrimSpace(got) != strings.TrimSpace(want) {
		tb.Errorf("exposition of %v:\ngot:\n%s\nwant:\n%s", names, got, want)
	}
}
