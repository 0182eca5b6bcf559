package mapserver

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestNewWithAnswersAsNew: the work and the metrics are a middleware each,
// and they change nothing the client sees.
func TestNewWithAnswersAsNew(t *testing.T) {
	urls := map[string]string{"abc": "https://example.com/x"}
	plain := New(urls).HandlersCount()
	for _, o := range []Options{{}, {Work: 5 * time.Microsecond}, {Metrics: prometheus.NewRegistry()},
		{Work: 5 * time.Microsecond, Metrics: prometheus.NewRegistry()}} {
		app, err := NewWith(urls, o)
		if err != nil {
			t.Fatal(err)
		}
		var want uint32
		if o.Work > 0 {
			want++
		}
		if o.Metrics != nil {
			want++
		}
		if extra := app.HandlersCount() - plain; extra != want {
			t.Errorf("%+v: %d handlers beyond the plain app's, want %d", o, extra, want)
		}
		for path, want := range map[string]int{"/abc": 302, "/nope": 404} {
			resp, err := app.Test(httptest.NewRequest("GET", path, nil))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != want || (want == 302 && resp.Header.Get("Location") != urls["abc"]) || resp.Header.Get("X-Busy-Work") != "" {
				t.Errorf("%+v, GET %s: %d %v", o, path, resp.StatusCode, resp.Header)
			}
		}
	}
}

// TestMetricsCountEveryRequest: with Options.Metrics the baseline pays for
// the metrics linkgate keeps (a count and a latency observation per request,
// labelled by status, method and route), so the bench row built on it is the
// library's real cost and not a registration that records nothing.
func TestMetricsCountEveryRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	app, err := NewWith(map[string]string{"abc": "https://example.com/x"}, Options{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/abc", "/abc", "/abc", "/nope"} {
		resp, err := app.Test(httptest.NewRequest("GET", path, nil))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for key, want := range map[string]float64{
		"http_requests_total method=GET path=/:code service=linkgate status_code=302":           3,
		"http_requests_total method=GET path=/:code service=linkgate status_code=404":           1,
		"http_request_duration_seconds method=GET path=/:code service=linkgate status_code=302": 3,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v (all: %v)", key, got[key], want, got)
		}
	}
}
