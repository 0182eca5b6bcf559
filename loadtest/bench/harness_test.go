package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The shipped config renders with every marker substituted, the flood guard
// removed and nothing else touched.
func TestRenderShippedNginx(t *testing.T) {
	raw, err := os.ReadFile("../../" + shippedNginxConf)
	if err != nil {
		t.Fatalf("the shipped nginx config: %v", err)
	}
	r, err := renderShippedNginx(string(raw), 18080, 18081, []string{"127.0.0.1:19000"}, "/tmp/x")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listen 127.0.0.1:18080;", "listen 127.0.0.1:18081;", "server 127.0.0.1:19000 ", "pid /tmp/x/nginx.pid;"} {
		if !strings.Contains(r.Conf, want) {
			t.Errorf("rendered config lacks %q", want)
		}
	}
	outLines := map[string]bool{}
	for _, line := range strings.Split(r.Conf, "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.Contains(code, "app1:8080") || strings.Contains(code, "app2:8080") {
			t.Errorf("compose upstream left in the rendered config: %q", line)
		}
		outLines[line] = true
	}
	guards := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if t1 := strings.TrimSpace(line); strings.HasPrefix(t1, "limit_req ") && strings.Contains(t1, "zone=") {
			guards++
		}
	}
	if len(r.FloodGuardLines) != guards {
		t.Errorf("flood guard: removed %q, the shipped file has %d limit_req lines", r.FloodGuardLines, guards)
	}
	for _, line := range strings.Split(r.Conf, "\n") {
		if t1 := strings.TrimSpace(line); strings.HasPrefix(t1, "limit_req ") {
			t.Errorf("per-IP limit left in the rendered config: %q", line)
		}
	}
	// Every other line is kept as shipped.
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, "# e2e:") && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if t1 := strings.TrimSpace(line); strings.HasPrefix(t1, "limit_req ") && strings.Contains(t1, "zone=") {
			continue
		}
		if !outLines[line] {
			t.Errorf("unmarked line changed or dropped: %q", line)
		}
	}
}

func TestRenderShippedNginxRejectsDrift(t *testing.T) {
	good := strings.Join([]string{
		"pid /var/run/nginx.pid; # e2e:path",
		"server app1:8080 max_fails=2; # e2e:upstream",
		"listen 80; # e2e:listen",
		"listen 8081; # e2e:status-listen",
	}, "\n") + "\n" + strings.Repeat("x /var/cache/nginx/t; # e2e:path\n", 5)
	if _, err := renderShippedNginx(good, 1, 2, []string{"127.0.0.1:3"}, "/d"); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, conf := range map[string]string{
		"missing listen marker": strings.Replace(good, "listen 80; # e2e:listen", "listen 80;", 1),
		"unmarked system path":  good + "error_log /var/log/nginx/error.log;\n",
		"marker on wrong line":  strings.Replace(good, "listen 80; # e2e:listen", "listen 81; # e2e:listen", 1),
	} {
		if _, err := renderShippedNginx(conf, 1, 2, []string{"127.0.0.1:3"}, "/d"); err == nil {
			t.Errorf("%s: rendered without error", name)
		}
	}
	if _, err := renderShippedNginx(good, 1, 2, nil, "/d"); err == nil {
		t.Error("no upstream: rendered without error")
	}
}

func TestParseWrk(t *testing.T) {
	out := "Running 1s test @ http://127.0.0.1:1\n  2 threads and 64 connections\n" +
		`WRK_RESULT {"duration_us":2000000,"requests":50000,"bytes":1,"connect_errors":0,"read_errors":1,"write_errors":0,"status_errors":2,"timeouts":3,"p50_us":800,"p90_us":1500,"p99_us":4000,"p999_us":9000,"max_us":12000,"mean_us":900.5}` + "\n"
	r, err := parseWrk([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS() != 25000 || r.Errors() != 6 || r.P99US != 4000 {
		t.Errorf("parsed %+v: rps %v errors %d", r, r.RPS(), r.Errors())
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Error("output without a result line parsed")
	}
	if _, err := parseWrk([]byte(`WRK_RESULT {"duration_us":1000000,"requests":0}` + "\n")); err == nil {
		t.Error("a run without requests parsed")
	}
}

func TestMetricSum(t *testing.T) {
	exp := `# HELP linkgate_ratelimit_decisions_total Decisions.
# TYPE linkgate_ratelimit_decisions_total counter
linkgate_ratelimit_decisions_total{decision="allowed",policy="redirect"} 10
linkgate_ratelimit_decisions_total{decision="denied",policy="redirect"} 2
linkgate_ratelimit_decisions_total{decision="allowed",policy="create"} 7
linkgate_ratelimit_decisions_total_extra 100
linkgate_links_created_total 5
linkgate_cache_entries{layer="lru"} 1e+06
`
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"linkgate_ratelimit_decisions_total", []string{`policy="redirect"`}, 12, true},
		{"linkgate_ratelimit_decisions_total", []string{`policy="create"`, `decision="allowed"`}, 7, true},
		{"linkgate_ratelimit_decisions_total", []string{`policy="api"`}, 0, false},
		{"linkgate_links_created_total", nil, 5, true},
		{"linkgate_cache_entries", []string{`layer="lru"`}, 1e6, true},
		{"linkgate_missing", nil, 0, false},
	} {
		got, found := metricSum(exp, c.name, c.labels...)
		if got != c.want || found != c.found {
			t.Errorf("metricSum(%s, %v) = %v, %v; want %v, %v", c.name, c.labels, got, found, c.want, c.found)
		}
	}
}

func TestStats(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i + 1)
	}
	if p := percentile(sorted, 99); p != 99 {
		t.Errorf("p99 of 1..100 = %v", p)
	}
	if p := percentile(sorted, 50); p != 50 {
		t.Errorf("p50 of 1..100 = %v", p)
	}
	if p := percentile([]time.Duration{}, 50); p != 0 {
		t.Errorf("p50 of nothing = %v", p)
	}
	if s := thousands(1234567.4); s != "1,234,567" {
		t.Errorf("thousands = %q", s)
	}
}

func TestRatioAndVerdict(t *testing.T) {
	mk := func(rps ...float64) *target {
		t := &target{}
		for _, r := range rps {
			t.runs = append(t.runs, sample{wrkResult: wrkResult{DurationUS: 1e6, Requests: int64(r), P99US: 4000}})
		}
		return t
	}
	base := mk(100, 110, 90)
	lg := mk(80, 77, 85)
	lg.Goal = goal{Label: "#1", MinRatio: 0.75, MaxP99: 5 * time.Millisecond}
	r, lo, hi := ratio(lg, base)
	if r != 0.8 || lo != 0.7 || hi < 0.94 || hi > 0.95 {
		t.Errorf("ratio = %v [%v, %v]", r, lo, hi)
	}
	if v := verdict(lg, base); v != "pass" {
		t.Errorf("verdict = %q", v)
	}
	lg.Goal.MaxP99 = 3 * time.Millisecond
	v := verdict(lg, base)
	if !strings.Contains(v, "FAIL") || !strings.Contains(v, "p99") {
		t.Errorf("verdict with p99 over the goal = %q", v)
	}
	if j := judged(options{}, v); j != v {
		t.Errorf("judged in an ordinary run = %q, want the verdict %q", j, v)
	}
	if j := judged(options{WrkBatch: true}, v); strings.Contains(j, "FAIL") || !strings.Contains(j, "not judged") {
		t.Errorf("judged in a -wrk-batch run = %q", j)
	}
	if j := judged(options{WrkBatch: true}, verdict(&target{}, base)); j != "" {
		t.Errorf("judged of a row without a goal = %q, want empty", j)
	}
}

func TestMemCodesDistinctAndValid(t *testing.T) {
	seen := map[string]bool{}
	for i := range 200000 {
		c := memCode(i)
		if len(c) != 7 || seen[c] {
			t.Fatalf("memCode(%d) = %q: duplicate or wrong length", i, c)
		}
		seen[c] = true
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-rounds", "2", "-memory-links", "1_000, 5000", "-phases", "memory,gobench"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.Rounds != 2 || len(o.MemLinks) != 2 || o.MemLinks[0] != 1000 || !o.Phases["memory"] || o.Phases["redirects"] {
		t.Errorf("options %+v", o)
	}
	for _, bad := range [][]string{{"-phases", "nope"}, {"-logs", "syslog"}, {"-rounds", "0"}, {"-memory-links", "x"}, {"-threads", "9", "-connections", "4"}} {
		if _, err := parseOptions(bad, os.Stderr); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBudgetSection(t *testing.T) {
	if got := lastMeeting([]float64{1, 0.9, 0.8, 0.9}, 0.85); got != 1 {
		t.Errorf("lastMeeting past a dip = %d, want 1", got)
	}
	if got := lastMeeting([]float64{0.8, 0.9}, 0.85); got != -1 {
		t.Errorf("lastMeeting with the first below = %d, want -1", got)
	}
	mk := func(rps, us float64) *target {
		return &target{runs: []sample{{wrkResult: wrkResult{DurationUS: 1e6, Requests: int64(rps)}, ServerUS: us}}}
	}
	budget := func(rps ...float64) *report {
		r := &report{Opts: options{Rounds: 1}}
		for i, x := range rps {
			r.Budget = append(r.Budget, mk(x, 10+2.5*float64(i)))
			r.Budget[i].Key = "work-" + budgetWork[i].String()
		}
		return r
	}
	r := budget(1000, 950, 880, 800, 600)
	base, bm, emb := mk(1000, 10), mk(950, 11.2), mk(700, 16.5)
	base.Key, bm.Key, emb.Key = "baseline", "baseline-metrics", "lg-embedded"
	bm.Baseline = "baseline"
	r.Targets = []*target{base, bm, emb}
	md := r.markdown()
	for _, want := range []string{
		"## Work budget",
		"| 2µs | 880 [880–880] | 0.00 ms | 0.88x [0.88–0.88] | 15.0 µs | +5.0 µs |",
		"- 0.85x (#3, linkgate direct): met with 2µs (+5.0 µs measured, 0.88x, 1 of 1 rounds at or above); missed with 4µs (+7.5 µs measured, 0.80x, 0 of 1 rounds at or above).",
		"- 0.75x (the ratio part of #1): met with 4µs (+7.5 µs measured, 0.80x, 1 of 1 rounds at or above); missed with 8µs (+10.0 µs measured, 0.60x, 0 of 1 rounds at or above).",
		"`baseline-metrics` +1.2 µs, `lg-embedded` +6.5 µs",
		// The metrics library's own share, read off the same run.
		"- `baseline-metrics` is the baseline with fiberprometheus, the HTTP metrics library the project requires, registered as linkgate registers it (and nothing else of linkgate's): 0.95x the baseline here, +1.2 µs of server CPU per request.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for rps, want := range map[[5]float64]string{
		{1000, 990, 980, 970, 960}: "- 0.75x (the ratio part of #1): met up to the largest step, 8µs (+10.0 µs measured, 0.96x, 1 of 1 rounds at or above).",
		{1000, 800, 990, 990, 990}: "- 0.85x (#3, linkgate direct): missed already with the smallest step, 1µs (+2.5 µs measured, 0.80x, 0 of 1 rounds at or above).",
	} {
		if md := budget(rps[:]...).markdown(); !strings.Contains(md, want) {
			t.Errorf("budget %v: report lacks %q:\n%s", rps, want, md)
		}
	}
	batch := budget(1000, 950, 880, 800, 600)
	batch.Opts.WrkBatch = true
	if md := batch.markdown(); strings.Contains(md, "met with") || !strings.Contains(md, "No goal is judged") {
		t.Errorf("a -wrk-batch run judges the budget:\n%s", md)
	}
	r.Budget = r.Budget[:2] // an incomplete phase writes no section
	if strings.Contains(r.markdown(), "Work budget") {
		t.Error("a budget section from an incomplete phase")
	}
}

// The micro-benchmarks run one package at a time (-p 1), with the count and
// benchtime asked for, over exactly the packages given.
func TestGoBenchArgs(t *testing.T) {
	got := strings.Join(goBenchArgs(options{GoBenchCount: 5, GoBenchTime: "300ms"}, []string{"./a/", "./b/"}), " ")
	if want := "test -p 1 -run ^$ -bench . -benchmem -count 5 -benchtime 300ms ./a/ ./b/"; got != want {
		t.Errorf("go %s\nwant go %s", got, want)
	}
	got = strings.Join(goBenchArgs(options{GoBenchCount: 1}, []string{"./a/"}), " ")
	if want := "test -p 1 -run ^$ -bench . -benchmem -count 1 ./a/"; got != want {
		t.Errorf("go %s\nwant go %s", got, want)
	}
	// The report prints the same command, quoted for a shell.
	if got, want := goBenchCommand(options{GoBenchCount: 5, GoBenchTime: "300ms"}), "go test -p 1 -run '^$' -bench . -benchmem -count 5 -benchtime 300ms"; got != want {
		t.Errorf("report's command %q, want %q", got, want)
	}
}
