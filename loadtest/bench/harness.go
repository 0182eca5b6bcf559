package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// generous is the limiter policy of the benchmark targets: on (every
// redirect takes a limiter decision) but never limiting, since all wrk
// traffic comes from one address and so one bucket.
const generous = "100000000/1s:100000000"

// harness holds what one `make bench` run started and made.
type harness struct {
	o      options
	log    io.Writer
	root   string // module root
	tmp    string
	sup    *supervisor
	start  time.Time
	load0  string // /proc/loadavg at start
	busy0  time.Duration
	total0 time.Duration

	linkgateBin, baselineBin, wrkBin, nginxBin, redisBin string
	redirectScript, createScript                         string
	codesTxt, codesTSV                                   string
	links                                                []link

	redis      *proc
	redisAddr  string
	pgAdminURL string
	pgDB       string
	pgURL      string
	pgSeeded   bool // the seeded links are in the PostgreSQL database
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "[%6.1fs] %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// path resolves p against the module root unless absolute.
func (h *harness) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(h.root, p)
}

func newHarness(ctx context.Context, o options, log io.Writer) (_ *harness, err error) {
	h := &harness{o: o, log: log, start: time.Now()}
	h.load0 = loadavg()
	h.busy0, h.total0 = machineCPU()
	if h.root, err = moduleRoot(); err != nil {
		return nil, err
	}
	for _, b := range []struct {
		dst  *string
		name string
		hint string
	}{
		{&h.wrkBin, "wrk", "apt-get install wrk"},
		{&h.redisBin, "redis-server", "apt-get install redis-server"},
	} {
		if *b.dst, err = exec.LookPath(b.name); err != nil {
			return nil, fmt.Errorf("%s not found on PATH (%s)", b.name, b.hint)
		}
	}
	if o.WrkBatch {
		if _, err = exec.LookPath("chrt"); err != nil {
			return nil, fmt.Errorf("-wrk-batch needs chrt on PATH (apt-get install util-linux)")
		}
	}
	if h.nginxBin, err = nginxBinary(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(h.root, shippedNginxConf)); err != nil {
		return nil, fmt.Errorf("the shipped nginx config %s is missing: the nginx targets render it (%w)", shippedNginxConf, err)
	}
	if h.tmp, err = os.MkdirTemp("", "lgbench-"); err != nil {
		return nil, err
	}
	h.sup = &supervisor{dir: h.tmp}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	// nginx workers drop root privileges and must reach their directories.
	if err := os.Chmod(h.tmp, 0o755); err != nil {
		return nil, err
	}

	h.logf("building linkgate and the baseline into %s", h.tmp)
	h.linkgateBin = filepath.Join(h.tmp, "linkgate")
	h.baselineBin = filepath.Join(h.tmp, "baseline")
	for pkg, out := range map[string]string{"./cmd/linkgate": h.linkgateBin, "./loadtest/baseline": h.baselineBin} {
		cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-o", out, pkg)
		cmd.Dir = h.root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
	}

	h.redirectScript = filepath.Join(h.tmp, "redirect.lua")
	h.createScript = filepath.Join(h.tmp, "create.lua")
	if err := writeFile(h.redirectScript, string(redirectLua)+"\n"+string(resultLua)); err != nil {
		return nil, err
	}
	if err := writeFile(h.createScript, string(createLua)+"\n"+string(resultLua)); err != nil {
		return nil, err
	}
	h.links = randomLinks(o.Codes)
	h.codesTxt = filepath.Join(h.tmp, "codes.txt")
	h.codesTSV = filepath.Join(h.tmp, "codes.tsv")
	var txt, tsv strings.Builder
	for _, l := range h.links {
		txt.WriteString(l.Code + "\n")
		tsv.WriteString(l.Code + "\t" + l.URL + "\n")
	}
	if err := writeFile(h.codesTxt, txt.String()); err != nil {
		return nil, err
	}
	if err := writeFile(h.codesTSV, tsv.String()); err != nil {
		return nil, err
	}

	if err := h.startRedis(ctx); err != nil {
		return nil, err
	}
	if err := h.createDatabase(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// close stops every process, drops the database and removes the temporary
// directory (unless -keep).
func (h *harness) close() {
	h.sup.stopAll()
	if h.pgDB != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, h.pgAdminURL); err == nil {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{h.pgDB}.Sanitize()+" WITH (FORCE)"); err != nil {
				h.logf("drop database %s: %v", h.pgDB, err)
			}
			conn.Close(ctx)
		} else {
			h.logf("drop database %s: %v", h.pgDB, err)
		}
	}
	if h.tmp != "" {
		if h.o.Keep {
			h.logf("kept %s", h.tmp)
		} else {
			os.RemoveAll(h.tmp)
		}
	}
}

func (h *harness) startRedis(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	h.redisAddr = "127.0.0.1:" + strconv.Itoa(port)
	p, err := h.sup.start("redis", h.redisBin, []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", h.tmp, "--loglevel", "warning"}, os.Environ(), true)
	if err != nil {
		return err
	}
	h.redis = p
	return waitUntil(ctx, p, 10*time.Second, "redis-server", func() bool { return dialable(h.redisAddr) })
}

// redisURL is the private Redis, database db.
func (h *harness) redisURL(db int) string {
	return "redis://" + h.redisAddr + "/" + strconv.Itoa(db)
}

func (h *harness) createDatabase(ctx context.Context) error {
	h.pgAdminURL = h.o.PostgresURL
	u, err := url.Parse(h.pgAdminURL)
	if err != nil {
		return fmt.Errorf("-postgres: %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	h.pgDB = "lgbench_" + hex.EncodeToString(b[:])
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, h.pgAdminURL)
	if err != nil {
		h.pgDB = ""
		return fmt.Errorf("PostgreSQL at %s does not answer (set -postgres or LINKGATE_BENCH_POSTGRES_URL): %w", u.Redacted(), err)
	}
	defer conn.Close(cctx)
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{h.pgDB}.Sanitize()); err != nil {
		h.pgDB = ""
		return fmt.Errorf("create database: %w", err)
	}
	u.Path = "/" + h.pgDB
	h.pgURL = u.String()
	h.logf("PostgreSQL database %s created", h.pgDB)
	return nil
}

// pgSettings reports the server's durability settings, for the report.
func (h *harness) pgSettings(ctx context.Context) string {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, h.pgURL)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer conn.Close(cctx)
	var parts []string
	for _, s := range []string{"server_version", "fsync", "synchronous_commit", "full_page_writes"} {
		var v string
		if err := conn.QueryRow(cctx, "SHOW "+s).Scan(&v); err != nil {
			v = "?"
		}
		parts = append(parts, s+"="+v)
	}
	return strings.Join(parts, ", ")
}

// pgCodes lists every code in the benchmark database.
func (h *harness) pgCodes(ctx context.Context) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(cctx, h.pgURL)
	if err != nil {
		return nil, fmt.Errorf("list codes: %w", err)
	}
	defer conn.Close(cctx)
	rows, err := conn.Query(cctx, "SELECT code FROM links")
	if err != nil {
		return nil, fmt.Errorf("list codes: %w", err)
	}
	codes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list codes: %w", err)
	}
	return codes, nil
}

// server is one started HTTP target process.
type server struct {
	name string
	addr string // 127.0.0.1:port
	proc *proc
}

// env is the harness's environment without LINKGATE_* variables, plus extra.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LINKGATE_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// startLinkgate starts linkgate with the shipped defaults except the given
// settings, and waits for /ready.
func (h *harness) startLinkgate(ctx context.Context, name string, settings ...string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	e := env(append([]string{
		"LINKGATE_ADDR=" + addr,
		"LINKGATE_BASE_URL=http://" + addr,
		"LINKGATE_LOG_LEVEL=info", // as shipped: access log on
		"LINKGATE_SHUTDOWN_DELAY=0s",
		"LINKGATE_DRAIN_TIMEOUT=5s",
		"LINKGATE_RATELIMIT_REDIRECT=" + generous,
		"LINKGATE_RATELIMIT_CREATE=" + generous,
		"LINKGATE_RATELIMIT_API=" + generous,
	}, settings...)...)
	p, err := h.sup.start(name, h.linkgateBin, nil, e, h.o.Logs == "null")
	if err != nil {
		return nil, err
	}
	s := &server{name: name, addr: addr, proc: p}
	if err := waitUntil(ctx, p, 30*time.Second, name+" /ready", func() bool {
		_, err := getBody("http://" + addr + "/ready")
		return err == nil
	}); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, h.sup.stderrTail(p))
	}
	return s, nil
}

// startBaseline starts the minimal Fiber server on the seeded codes, with
// work of CPU added per request (zero: the baseline itself) and, with
// metrics, linkgate's HTTP metrics middleware, as name.
func (h *harness) startBaseline(ctx context.Context, name string, work time.Duration, metrics bool) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"-addr", addr, "-codes", h.codesTSV, "-work", work.String()}
	if metrics {
		args = append(args, "-metrics")
	}
	p, err := h.sup.start(name, h.baselineBin, args, env(), true)
	if err != nil {
		return nil, err
	}
	s := &server{name: name, addr: addr, proc: p}
	if err := waitUntil(ctx, p, 15*time.Second, name, func() bool { return dialable(addr) }); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, h.sup.stderrTail(p))
	}
	return s, nil
}

// startNginx writes conf (rendered for dir name) and runs nginx on it.
func (h *harness) startNginx(ctx context.Context, name string, conf string, port int) (*server, error) {
	dir, confPath, err := writeNginx(h.nginxBin, h.tmp, name, conf)
	if err != nil {
		return nil, err
	}
	p, err := h.sup.start(name, h.nginxBin, []string{"-p", dir + "/", "-c", confPath, "-g", "daemon off;"}, env(), h.o.Logs == "null")
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &server{name: name, addr: addr, proc: p}
	if err := waitUntil(ctx, p, 15*time.Second, name, func() bool { return dialable(addr) }); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, h.sup.stderrTail(p))
	}
	return s, nil
}

// startShippedNginx runs deploy/nginx/nginx.conf in front of upstreams.
func (h *harness) startShippedNginx(ctx context.Context, name string, upstreams ...string) (*server, renderedNginx, error) {
	raw, err := os.ReadFile(filepath.Join(h.root, shippedNginxConf))
	if err != nil {
		return nil, renderedNginx{}, fmt.Errorf("read the shipped nginx config: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, renderedNginx{}, err
	}
	statusPort, err := freePort()
	if err != nil {
		return nil, renderedNginx{}, err
	}
	r, err := renderShippedNginx(string(raw), port, statusPort, upstreams, filepath.Join(h.tmp, name))
	if err != nil {
		return nil, r, err
	}
	s, err := h.startNginx(ctx, name, r.Conf, port)
	return s, r, err
}

// randomLinks makes n distinct random 7-character base62 codes with URLs of
// a realistic length.
func randomLinks(n int) []link {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	seen := make(map[string]bool, n)
	out := make([]link, 0, n)
	buf := make([]byte, 7)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for i := range buf {
			buf[i] = alphabet[int(buf[i])%len(alphabet)]
		}
		c := string(buf)
		if seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, link{Code: c, URL: fmt.Sprintf("https://example.com/articles/%06d/benchmark-target?utm_source=bench", len(out))})
	}
	return out
}

// moduleRoot walks up from the working directory to linkgate's go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			first := ""
			if sc.Scan() {
				first = strings.TrimSpace(sc.Text())
			}
			f.Close()
			if first == "module github.com/linkgate/linkgate" {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run from inside the linkgate module (no go.mod of github.com/linkgate/linkgate above %s)", dir)
		}
		dir = parent
	}
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// commandVersion is the first line of cmd args' combined output.
func commandVersion(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}
