package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/linkgate/linkgate/internal/testenv"
)

// This file holds the helpers of the observability tests
// (observability_*_test.go): a real Prometheus (Debian package prometheus)
// scraping linkgate and the nginx and Redis exporters with a configuration
// derived from the shipped prometheus.yml and loading the shipped alert rules,
// a small client for its HTTP API, and a pipelined HTTP/1.1 load generator.

// Paths of the shipped files, relative to this package.
const (
	obsRepoRoot         = "../.."
	obsPrometheusConfig = obsRepoRoot + "/prometheus.yml"
	obsDashboardPath    = obsRepoRoot + "/deploy/grafana/dashboards/linkgate.json"
	obsRulesPath        = obsRepoRoot + "/deploy/prometheus/alerts.yml"
)

// obsScrapeInterval is the scrape and rule evaluation interval of the test
// Prometheus.
const obsScrapeInterval = time.Second

// obsProcess is a helper server (Prometheus, an exporter) started in its own
// process group and stopped at cleanup.
type obsProcess struct {
	t    *testing.T
	name string
	addr string // host:port it listens on
	cmd  *exec.Cmd
	log  string
	done chan error
}

// obsStart runs bin with args, its output going to a log file, and waits
// until GET http://addr+readyPath answers 200. The process is stopped
// (SIGTERM, then SIGKILL to its group) at cleanup.
func obsStart(t *testing.T, name, addr, readyPath, bin string, args ...string) *obsProcess {
	t.Helper()
	p := &obsProcess{t: t, name: name, addr: addr, log: filepath.Join(t.TempDir(), name+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.cmd = cmd
	p.done = make(chan error, 1)
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(p.stop)
	exited := false
	ok := testenv.Eventually(20*time.Second, func() bool {
		select {
		case err := <-p.done:
			p.done <- err
			exited = true
			return true
		default:
		}
		resp, err := client.Get("http://" + addr + readyPath)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if exited || !ok {
		t.Fatalf("%s did not become ready on %s (exited: %v)\n%s", name, addr, exited, p.logs())
	}
	return p
}

func (p *obsProcess) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

func (p *obsProcess) logs() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// obsRenderPrometheusConfig derives the test's Prometheus configuration from
// the shipped prometheus.yml: every scrape job keeps its name and settings
// but gets the given static targets (a job of the file without targets here,
// or targets for a job the file lacks, fails the test, so the two cannot
// drift apart); scrape and evaluation intervals become obsScrapeInterval;
// rule_files are resolved to the shipped files' absolute paths.
func obsRenderPrometheusConfig(t *testing.T, targets map[string][]string) []byte {
	t.Helper()
	raw, err := os.ReadFile(obsPrometheusConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
	}
	interval := obsDuration(obsScrapeInterval)
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = interval, interval, interval
	cfg["global"] = global

	files, _ := cfg["rule_files"].([]any)
	if len(files) == 0 {
		t.Fatal("prometheus.yml loads no rule_files")
	}
	root, err := filepath.Abs(obsRepoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		abs := filepath.Join(root, filepath.FromSlash(fmt.Sprint(f)))
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("prometheus.yml rule file %v: %v", f, err)
		}
		files[i] = abs
	}

	jobs, _ := cfg["scrape_configs"].([]any)
	seen := map[string]bool{}
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name := fmt.Sprint(job["job_name"])
		seen[name] = true
		tg, ok := targets[name]
		if !ok {
			t.Fatalf("prometheus.yml job %q: the test has no targets for it", name)
		}
		for _, k := range []string{"scrape_interval", "scrape_timeout"} {
			if _, ok := job[k]; ok {
				job[k] = interval
			}
		}
		job["static_configs"] = []any{map[string]any{"targets": tg}}
	}
	for name := range targets {
		if !seen[name] {
			t.Fatalf("prometheus.yml has no job %q", name)
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// obsDuration formats a duration the way Prometheus and Grafana write them
// (whole seconds or milliseconds).
func obsDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	return strconv.Itoa(int(d/time.Millisecond)) + "ms"
}

// obsProm is a running Prometheus.
type obsProm struct {
	*obsProcess
	URL string
}

// obsStartPrometheus writes config to a temporary directory and starts
// Prometheus on addr (127.0.0.1:port) with its TSDB there; it returns once
// /-/ready answers.
func obsStartPrometheus(t *testing.T, addr string, config []byte) *obsProm {
	t.Helper()
	bin := testenv.Tool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, config, 0o644); err != nil {
		t.Fatal(err)
	}
	p := obsStart(t, "prometheus", addr, "/-/ready", bin,
		"--config.file="+path,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	return &obsProm{obsProcess: p, URL: "http://" + addr}
}

// api GETs /api/v1/<path> and returns its data member; a transport error, a
// status other than success or an undecodable body is returned as an error.
func (p *obsProm) api(path string, params url.Values) (json.RawMessage, error) {
	resp, err := client.Get(p.URL + "/api/v1/" + path + "?" + params.Encode())
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: read: %w", path, err)
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("prometheus %s: HTTP %d: %w: %q", path, resp.StatusCode, err, body)
	}
	if env.Status != "success" {
		return nil, fmt.Errorf("prometheus %s: %s: %s", path, env.ErrorType, env.Error)
	}
	return env.Data, nil
}

// obsSeries is one series of a query result: its labels and the values of
// its samples (one for an instant query), as Prometheus formats them.
type obsSeries struct {
	Metric map[string]string
	Values []string
}

// finite reports whether any value is a finite number (not NaN, not ±Inf).
func (s obsSeries) finite() bool {
	for _, v := range s.Values {
		f, err := strconv.ParseFloat(v, 64)
		if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return true
		}
	}
	return false
}

// value returns the last sample as a number (NaN if there is none).
func (s obsSeries) value() float64 {
	if len(s.Values) == 0 {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(s.Values[len(s.Values)-1], 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// query runs an instant query at the given time.
func (p *obsProm) query(expr string, at time.Time) ([]obsSeries, error) {
	data, err := p.api("query", url.Values{"query": {expr}, "time": {obsTime(at)}})
	if err != nil {
		return nil, err
	}
	return obsDecodeResult(data)
}

// queryRange runs a range query from start to end.
func (p *obsProm) queryRange(expr string, start, end time.Time, step time.Duration) ([]obsSeries, error) {
	data, err := p.api("query_range", url.Values{
		"query": {expr}, "start": {obsTime(start)}, "end": {obsTime(end)}, "step": {step.String()},
	})
	if err != nil {
		return nil, err
	}
	return obsDecodeResult(data)
}

// mustQuery is query that fails the test on an error.
func (p *obsProm) mustQuery(t *testing.T, expr string) []obsSeries {
	t.Helper()
	r, err := p.query(expr, time.Now())
	if err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	return r
}

func obsTime(at time.Time) string {
	return strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
}

// obsDecodeResult decodes the data of a query or query_range answer: a
// vector, a matrix or a scalar.
func obsDecodeResult(data json.RawMessage) ([]obsSeries, error) {
	var r struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	pointValue := func(p []any) string {
		if len(p) != 2 {
			return ""
		}
		s, _ := p[1].(string)
		return s
	}
	var out []obsSeries
	switch r.ResultType {
	case "vector":
		var v []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if err := json.Unmarshal(r.Result, &v); err != nil {
			return nil, fmt.Errorf("decode vector: %w", err)
		}
		for _, s := range v {
			out = append(out, obsSeries{Metric: s.Metric, Values: []string{pointValue(s.Value)}})
		}
	case "matrix":
		var m []struct {
			Metric map[string]string `json:"metric"`
			Values [][]any           `json:"values"`
		}
		if err := json.Unmarshal(r.Result, &m); err != nil {
			return nil, fmt.Errorf("decode matrix: %w", err)
		}
		for _, s := range m {
			vs := make([]string, 0, len(s.Values))
			for _, p := range s.Values {
				vs = append(vs, pointValue(p))
			}
			out = append(out, obsSeries{Metric: s.Metric, Values: vs})
		}
	case "scalar":
		var p []any
		if err := json.Unmarshal(r.Result, &p); err != nil {
			return nil, fmt.Errorf("decode scalar: %w", err)
		}
		out = append(out, obsSeries{Values: []string{pointValue(p)}})
	default:
		return nil, fmt.Errorf("result type %q", r.ResultType)
	}
	return out, nil
}

// waitTargetsUp waits until Prometheus has scraped every active target
// successfully at least once.
func (p *obsProm) waitTargetsUp(t *testing.T, want int) {
	t.Helper()
	var last string
	ok := testenv.Eventually(20*time.Second, func() bool {
		data, err := p.api("targets", url.Values{"state": {"active"}})
		if err != nil {
			last = err.Error()
			return false
		}
		var r struct {
			ActiveTargets []struct {
				ScrapePool string `json:"scrapePool"`
				ScrapeURL  string `json:"scrapeUrl"`
				Health     string `json:"health"`
				LastError  string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			last = err.Error()
			return false
		}
		var bad []string
		for _, tg := range r.ActiveTargets {
			if tg.Health != "up" {
				bad = append(bad, fmt.Sprintf("%s %s: %s %s", tg.ScrapePool, tg.ScrapeURL, tg.Health, tg.LastError))
			}
		}
		last = fmt.Sprintf("%d targets, not up: %v", len(r.ActiveTargets), bad)
		return len(r.ActiveTargets) == want && len(bad) == 0
	})
	if !ok {
		t.Fatalf("Prometheus targets not all up: %s\n%s", last, p.logs())
	}
}

// obsBlastResult counts the answers of a blast by status code.
type obsBlastResult struct {
	statuses map[int]int
	errs     []error
}

// obsBlast sends n GET requests for the paths next(i), i in [0, n), to addr
// (host:port) over conns keep-alive connections, pipelining batch requests at
// a time on each, and counts the answers' statuses. It stops early, with an
// error, at the deadline.
func obsBlast(addr string, n, conns, batch int, deadline time.Time, next func(i int) string) obsBlastResult {
	var (
		mu  sync.Mutex
		res = obsBlastResult{statuses: map[int]int{}}
		wg  sync.WaitGroup
	)
	work := make(chan [2]int, n/batch+1)
	for lo := 0; lo < n; lo += batch {
		work <- [2]int{lo, min(lo+batch, n)}
	}
	close(work)
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[int]int{}
			err := obsBlastConn(addr, work, deadline, next, local)
			mu.Lock()
			defer mu.Unlock()
			for s, k := range local {
				res.statuses[s] += k
			}
			if err != nil {
				res.errs = append(res.errs, err)
			}
		}()
	}
	wg.Wait()
	return res
}

// obsBlastConn serves batches from work on one connection, redialling when
// the server closes it between batches.
func obsBlastConn(addr string, work <-chan [2]int, deadline time.Time, next func(int) string, statuses map[int]int) error {
	var (
		conn net.Conn
		br   *bufio.Reader
		bw   *bufio.Writer
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for w := range work {
		if time.Now().After(deadline) {
			return fmt.Errorf("deadline passed with work left")
		}
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return fmt.Errorf("dial: %w", err)
			}
			conn, br, bw = c, bufio.NewReaderSize(c, 64<<10), bufio.NewWriterSize(c, 64<<10)
		}
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
		for i := w[0]; i < w[1]; i++ {
			fmt.Fprintf(bw, "GET %s HTTP/1.1\r\nHost: short.test\r\nUser-Agent: linkgate-e2e\r\n\r\n", next(i))
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		closing := false
		for i := w[0]; i < w[1]; i++ {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return fmt.Errorf("read response %d of batch: %w", i-w[0], err)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("read body: %w", err)
			}
			statuses[resp.StatusCode]++
			if resp.Close && i < w[1]-1 {
				return fmt.Errorf("server closed the connection mid-batch")
			}
			closing = resp.Close
		}
		if closing {
			conn.Close()
			conn = nil
		}
	}
	return nil
}

// obsToken returns n characters of [A-Za-z0-9] that depend only on seed
// and i (splitmix64), so that concurrent callers need no shared state and
// different i give different tokens.
func obsToken(seed uint64, i, n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	x := seed ^ uint64(i)*0x9E3779B97F4A7C15
	b := make([]byte, n)
	for k := range b {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		z ^= z >> 31
		b[k] = alphabet[z%uint64(len(alphabet))]
	}
	return string(b)
}

// obsSeriesSet returns the series (name and labels, without the value) of a
// /metrics body whose metric name has one of the prefixes.
func obsSeriesSet(body []byte, prefixes ...string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out[line[:i]] = true
				break
			}
		}
	}
	return out
}
