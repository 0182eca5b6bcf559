package e2e

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// scrape returns every sample line of /metrics as series → value.
func scrape(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	r := do(t, "GET", s.URL+"/metrics", nil)
	if r.Status != 200 {
		t.Fatalf("/metrics: %d", r.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsRecordWhatWasSent(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/m.db")
	code := s.create(t, `{"url":"https://example.com/m"}`)["code"].(string)
	for i := 0; i < 3; i++ {
		do(t, "GET", s.URL+"/"+code, nil)
	}
	do(t, "GET", s.URL+"/nosuchcode1", nil)
	do(t, "GET", s.URL+"/nosuchcode2", nil)
	do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"javascript:x"}`), jsonCT)
	do(t, "GET", s.URL+"/live", nil)

	m := scrape(t, s)
	want := map[string]float64{
		`linkgate_links_created_total`:                                                                 1,
		`linkgate_redirects_total{result="found"}`:                                                     3,
		`linkgate_redirects_total{result="not_found"}`:                                                 2,
		`linkgate_redirects_total{result="expired"}`:                                                   0,
		`http_requests_total{method="GET",path="/:code",service="linkgate",status_code="302"}`:         3,
		`http_requests_total{method="GET",path="/:code",service="linkgate",status_code="404"}`:         2,
		`http_requests_total{method="POST",path="/api/v1/links",service="linkgate",status_code="201"}`: 1,
		`http_requests_total{method="POST",path="/api/v1/links",service="linkgate",status_code="422"}`: 1,
		`linkgate_cache_requests_total{layer="lru",result="hit"}`:                                      2,
		`linkgate_ratelimit_decisions_total{decision="limited",policy="create"}`:                       0,
	}
	for series, v := range want {
		if got, ok := m[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	for series := range m {
		if strings.HasPrefix(series, "http_requests_total") && (strings.Contains(series, "nosuchcode") ||
			strings.Contains(series, `path="/live"`) || strings.Contains(series, `status_code="500"`)) {
			t.Errorf("unexpected series %s", series)
		}
	}
}
