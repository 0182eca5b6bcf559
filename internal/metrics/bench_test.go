package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/internal/cache"
	"github.com/linkgate/linkgate/internal/metrics"
	"github.com/linkgate/linkgate/internal/ratelimit"
)

// The recorders run on every request. Each benchmark has a baseline measured
// in the same run: the same increment through CounterVec.WithLabelValues,
// which hashes the label values on every call.

func BenchmarkRedirect(b *testing.B) {
	m := newMetrics(b, metrics.Config{})
	b.ReportAllocs()
	for b.Loop() {
		m.Redirect(metrics.RedirectFound)
	}
}

func BenchmarkCacheRequest(b *testing.B) {
	m := newMetrics(b, metrics.Config{})
	b.ReportAllocs()
	for b.Loop() {
		m.CacheRequest(cache.LayerStore, cache.ResultError) // the last of each set: the longest scan
	}
}

func BenchmarkDecision(b *testing.B) {
	m := newMetrics(b, metrics.Config{})
	b.ReportAllocs()
	for b.Loop() {
		m.Decision(metrics.PolicyAPI, ratelimit.DecisionError)
	}
}

func BenchmarkRedirectParallel(b *testing.B) {
	m := newMetrics(b, metrics.Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Redirect(metrics.RedirectFound)
		}
	})
}

func BenchmarkBaselineWithLabelValues1(b *testing.B) {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"result"})
	b.ReportAllocs()
	for b.Loop() {
		v.WithLabelValues(metrics.RedirectFound).Inc()
	}
}

func BenchmarkBaselineWithLabelValues2(b *testing.B) {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"layer", "result"})
	b.ReportAllocs()
	for b.Loop() {
		v.WithLabelValues(cache.LayerStore, cache.ResultError).Inc()
	}
}

func BenchmarkStoreObserve(b *testing.B) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: metrics.StoreBuckets()})
	b.ReportAllocs()
	for b.Loop() {
		h.Observe(0.0003)
	}
}
