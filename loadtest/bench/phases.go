package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// goal is one of the performance targets for a row.
type goal struct {
	Label    string        // e.g. "#1"
	MinRatio float64       // to the row's baseline; 0: none
	MaxP99   time.Duration // 0: none
	MinRPS   float64       // 0: none
}

// sample is one measured wrk run.
type sample struct {
	wrkResult
	ServerCores float64   // CPU of the target's own processes / wall time
	ServerUS    float64   // CPU of the target's own processes per request, µs
	Preempted   float64   // involuntary context switches of the server's threads per request
	Blocked     float64   // voluntary context switches of the server's threads per request
	WrkCores    float64   // CPU of wrk / wall time
	BusyCores   float64   // CPU of the whole machine / wall time
	LogLines    []float64 // stdout lines per request of each logged process
	Decisions   float64   // redirect-policy limiter decisions per request; -1: not read
	Created     float64   // links created per request (creates only); -1: not read
}

// target is one row of the throughput table.
type target struct {
	Key, Name string
	Baseline  string // Key of the row it is compared with
	Goal      goal
	Notes     []string

	srv  *server // what wrk drives
	cpu  []*proc // processes counted as the server side
	lg   *server // linkgate whose /metrics are read (nil for baselines)
	logs []*proc // processes whose stdout lines are counted per run
	runs []sample
}

// runAll runs every phase and returns the report.
func (h *harness) runAll(ctx context.Context) (*report, error) {
	rep := &report{
		Date:   time.Now().UTC(),
		Cores:  numCPU(),
		CPU:    cpuModel(),
		Opts:   h.o,
		Load0:  h.load0,
		Go:     commandVersion(h.o.Go, "version"),
		Wrk:    commandVersion(h.wrkBin, "-v"),
		Nginx:  commandVersion(h.nginxBin, "-v"),
		Redis:  commandVersion(h.redisBin, "--version"),
		Commit: commandVersion("git", "-C", h.root, "describe", "--always", "--dirty"),
		PG:     h.pgSettings(ctx),
	}
	ph := h.o.Phases
	if ph["redirects"] || ph["creates"] {
		targets, err := h.startTargets(ctx, rep)
		if err != nil {
			return nil, err
		}
		if ph["redirects"] {
			if err := h.redirectRounds(ctx, targets); err != nil {
				return nil, err
			}
			rep.Targets = targets
		}
		if ph["creates"] {
			byKey := map[string]*target{}
			for _, t := range targets {
				byKey[t.Key] = t
			}
			creates, err := h.createRounds(ctx, byKey["lg-embedded"], byKey["lg-prod"])
			if err != nil {
				return nil, err
			}
			rep.Creates = creates
		}
		// The phases below run alone.
		for _, t := range targets {
			for _, p := range t.cpu {
				if p != h.redis {
					h.sup.stop(p, 10*time.Second)
				}
			}
		}
	}
	if ph["budget"] {
		budget, err := h.budgetRounds(ctx)
		if err != nil {
			return nil, err
		}
		rep.Budget = budget
	}
	if ph["cold"] {
		cold, err := h.coldRun(ctx)
		if err != nil {
			return nil, err
		}
		rep.Cold = append(rep.Cold, cold...)
	}
	if ph["memory"] && len(h.o.MemLinks) > 0 {
		mem, cold, err := h.memory(ctx)
		if err != nil {
			return nil, err
		}
		rep.Memory = mem
		rep.Cold = append(rep.Cold, cold...)
	}
	rep.Load1 = loadavg()
	busy, total := machineCPU()
	if total > h.total0 {
		rep.BusyShare = float64(busy-h.busy0) / float64(total-h.total0)
	}
	if ph["gobench"] {
		rep.GoBench = h.o.GoBenchOut
		if err := h.goBench(ctx); err != nil {
			return nil, err
		}
	}
	rep.Wall = time.Since(h.start)
	return rep, nil
}

// startTargets starts every redirect target and seeds and checks it.
func (h *harness) startTargets(ctx context.Context, rep *report) ([]*target, error) {
	h.logf("starting targets")
	base, err := h.startBaseline(ctx, "baseline", 0, false)
	if err != nil {
		return nil, err
	}
	baseMetrics, err := h.startBaseline(ctx, "baseline-metrics", 0, true)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ceiling, err := h.startNginx(ctx, "nginx-return", returnNginxConf(port, filepath.Join(h.tmp, "nginx-return")), port)
	if err != nil {
		return nil, err
	}
	nginxBase, rendered, err := h.startShippedNginx(ctx, "nginx-baseline", base.addr)
	if err != nil {
		return nil, err
	}
	rep.FloodGuard = rendered.FloodGuardLines

	emb, err := h.startLinkgate(ctx, "lg-embedded", "LINKGATE_DATABASE_URL=sqlite://"+filepath.Join(h.tmp, "embedded.db"))
	if err != nil {
		return nil, err
	}
	prodEnv := []string{"LINKGATE_DATABASE_URL=" + h.pgURL, "LINKGATE_REDIS_URL=" + h.redisURL(0)}
	// The first production instance migrates the fresh database alone.
	prod, err := h.startLinkgate(ctx, "lg-prod", prodEnv...)
	if err != nil {
		return nil, err
	}
	prodOff, err := h.startLinkgate(ctx, "lg-prod-nolimit", append(prodEnv, "LINKGATE_RATELIMIT_REDIRECT=off")...)
	if err != nil {
		return nil, err
	}
	prodEdge, err := h.startLinkgate(ctx, "lg-prod-edge", append(prodEnv, "LINKGATE_TRUSTED_PROXIES=127.0.0.1/32")...)
	if err != nil {
		return nil, err
	}
	edge, _, err := h.startShippedNginx(ctx, "nginx-edge", prodEdge.addr)
	if err != nil {
		return nil, err
	}

	h.logf("seeding %d codes into SQLite and PostgreSQL through the API", len(h.links))
	t0 := time.Now()
	if err := seedLinks(ctx, emb.addr, h.links, 16, 5*time.Minute); err != nil {
		return nil, err
	}
	rep.SeedSQLite = time.Since(t0)
	t0 = time.Now()
	if err := seedLinks(ctx, prod.addr, h.links, 16, 5*time.Minute); err != nil {
		return nil, err
	}
	rep.SeedPG = time.Since(t0)
	h.pgSeeded = true

	targets := []*target{
		{Key: "nginx-return", Name: "nginx `return 302` (loopback ceiling)", srv: ceiling, cpu: []*proc{ceiling.proc}},
		{Key: "baseline", Name: "minimal Fiber, Go map (`loadtest/baseline`)", Baseline: "nginx-return", srv: base, cpu: []*proc{base.proc}},
		// The project requires fiberprometheus for the HTTP metrics: this row is
		// what that library costs on its own, the part of every linkgate row's
		// ratio no code of linkgate's can win back.
		{Key: "baseline-metrics", Name: "minimal Fiber + fiberprometheus (linkgate's HTTP metrics alone)", Baseline: "baseline",
			srv: baseMetrics, cpu: []*proc{baseMetrics.proc}},
		{Key: "nginx-baseline", Name: "shipped nginx → minimal Fiber", Baseline: "baseline", srv: nginxBase,
			cpu: []*proc{nginxBase.proc, base.proc}, logs: []*proc{nginxBase.proc}},
		{Key: "lg-embedded", Name: "linkgate direct, embedded (SQLite, LRU, local limiter)", Baseline: "baseline",
			Goal: goal{Label: "#3", MinRatio: 0.85}, srv: emb, lg: emb, cpu: []*proc{emb.proc}, logs: []*proc{emb.proc}},
		{Key: "lg-prod", Name: "linkgate direct, production (PostgreSQL, Redis L2, Redis limiter on)", Baseline: "baseline",
			Goal: goal{Label: "#1", MinRatio: 0.75, MaxP99: 5 * time.Millisecond}, srv: prod, lg: prod,
			cpu: []*proc{prod.proc, h.redis}, logs: []*proc{prod.proc}},
		{Key: "lg-prod-nolimit", Name: "linkgate direct, production, limiter off", Baseline: "baseline",
			srv: prodOff, lg: prodOff, cpu: []*proc{prodOff.proc, h.redis}, logs: []*proc{prodOff.proc}},
		{Key: "lg-edge", Name: "shipped nginx → linkgate production (limiter on)", Baseline: "nginx-baseline",
			Goal: goal{Label: "#2", MinRatio: 0.85}, srv: edge, lg: prodEdge,
			cpu: []*proc{edge.proc, prodEdge.proc, h.redis}, logs: []*proc{edge.proc, prodEdge.proc}},
	}
	for _, t := range targets {
		if err := checkRedirects(t.srv.addr, h.linksFor(t), 50); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	return targets, nil
}

// budgetWork is the CPU the budget phase adds to the baseline's requests.
var budgetWork = []time.Duration{0, time.Microsecond, 2 * time.Microsecond, 4 * time.Microsecond, 8 * time.Microsecond}

// budgetRounds measures the baseline with budgetWork added per request, in
// rounds like the redirect targets', and stops it again: how much work a
// server may add per request, on this machine in this run, before its rate
// falls below a goal's ratio.
func (h *harness) budgetRounds(ctx context.Context) ([]*target, error) {
	h.logf("starting the baseline with %v of added work per request", budgetWork)
	var targets []*target
	defer func() {
		for _, t := range targets {
			h.sup.stop(t.srv.proc, 10*time.Second)
		}
	}()
	for _, w := range budgetWork {
		key := "work-" + w.String()
		s, err := h.startBaseline(ctx, key, w, false)
		if err != nil {
			return nil, err
		}
		targets = append(targets, &target{Key: key, Name: fmt.Sprintf("minimal Fiber + %v of CPU per request", w), srv: s, cpu: []*proc{s.proc}})
	}
	for _, t := range targets {
		if err := checkRedirects(t.srv.addr, h.links, 50); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
	}
	if err := h.redirectRounds(ctx, targets); err != nil {
		return nil, err
	}
	return targets, nil
}

// linksFor is what t must answer: the seeded links, or any 302 for the
// ceiling (its Location is fixed).
func (h *harness) linksFor(t *target) []link {
	if t.Key != "nginx-return" {
		return h.links
	}
	out := make([]link, len(h.links))
	for i, l := range h.links {
		out[i] = link{Code: l.Code}
	}
	return out
}

// redirectRounds warms every target up, then runs the rounds.
func (h *harness) redirectRounds(ctx context.Context, targets []*target) error {
	if h.o.Warmup >= time.Second {
		for _, t := range targets {
			h.logf("warm-up %s (%v)", t.Key, h.o.Warmup)
			if _, err := h.measure(ctx, t, h.redirectScript, []string{h.codesTxt}, h.o.Warmup); err != nil {
				return fmt.Errorf("warm-up %s: %w", t.Name, err)
			}
		}
	}
	for r := range h.o.Rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)] // rotated, so no target always follows the same one
			s, err := h.measure(ctx, t, h.redirectScript, []string{h.codesTxt}, h.o.Duration)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, t.Name, err)
			}
			t.runs = append(t.runs, s)
			h.logf("round %d/%d %-16s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  cpu: server %.2f wrk %.2f machine %.2f",
				r+1, h.o.Rounds, t.Key, s.RPS(), ms(s.P50US), ms(s.P99US), s.Errors(), s.ServerCores, s.WrkCores, s.BusyCores)
		}
	}
	return nil
}

// measure runs wrk against t once and collects CPU, logs and metrics.
func (h *harness) measure(ctx context.Context, t *target, script string, args []string, d time.Duration) (sample, error) {
	var s sample
	use0 := make([]usage, len(t.cpu))
	for i, p := range t.cpu {
		use0[i] = groupUsage(p.pid())
	}
	var m0 string
	if t.lg != nil {
		var err error
		if m0, err = getBody("http://" + t.lg.addr + "/metrics"); err != nil {
			return s, err
		}
	}
	busy0, _ := machineCPU()
	start := time.Now()
	res, wrkCPU, err := wrkRun{Bin: h.wrkBin, Script: script, ScriptArgs: args, URL: "http://" + t.srv.addr,
		Threads: h.o.Threads, Connections: h.o.Connections, Duration: d, Batch: h.o.WrkBatch}.run(ctx)
	if err != nil {
		return s, err
	}
	wall := time.Since(start).Seconds()
	busy1, _ := machineCPU()
	s.wrkResult = res
	var serverCPU time.Duration
	var vol, invol int64
	for i, p := range t.cpu {
		u := groupUsage(p.pid())
		serverCPU += u.CPU - use0[i].CPU
		vol += u.Voluntary - use0[i].Voluntary
		invol += u.Involuntary - use0[i].Involuntary
	}
	req := float64(res.Requests)
	s.ServerCores = serverCPU.Seconds() / wall
	s.ServerUS = float64(serverCPU.Microseconds()) / req
	s.Preempted = float64(invol) / req
	s.Blocked = float64(vol) / req
	s.WrkCores = wrkCPU.Seconds() / wall
	s.BusyCores = (busy1 - busy0).Seconds() / wall
	s.Decisions, s.Created = -1, -1
	if t.lg != nil {
		m1, err := getBody("http://" + t.lg.addr + "/metrics")
		if err != nil {
			return s, err
		}
		if a, ok := metricSum(m1, "linkgate_ratelimit_decisions_total", `policy="redirect"`); ok {
			b, _ := metricSum(m0, "linkgate_ratelimit_decisions_total", `policy="redirect"`)
			s.Decisions = (a - b) / req
		}
		if a, ok := metricSum(m1, "linkgate_links_created_total"); ok {
			b, _ := metricSum(m0, "linkgate_links_created_total")
			s.Created = (a - b) / req
		}
	}
	select {
	case <-ctx.Done():
		return s, ctx.Err()
	case <-time.After(h.o.Settle):
	}
	for _, p := range t.logs {
		if p.logPath == "" {
			continue
		}
		s.LogLines = append(s.LogLines, float64(countLines(p.logPath))/float64(res.Requests))
		if err := os.Truncate(p.logPath, 0); err != nil {
			return s, err
		}
	}
	return s, nil
}

// createRounds measures creates per second on SQLite and PostgreSQL.
func (h *harness) createRounds(ctx context.Context, sqlite, pg *target) ([]*target, error) {
	rows := []*target{
		{Key: "create-sqlite", Name: "creates, embedded (SQLite, synchronous=FULL)", Goal: goal{Label: "#4", MinRPS: 1000},
			srv: sqlite.srv, lg: sqlite.lg, cpu: sqlite.cpu, logs: sqlite.logs},
		{Key: "create-pg", Name: "creates, production (PostgreSQL, synchronous_commit=on)", Goal: goal{Label: "#4", MinRPS: 3000},
			srv: pg.srv, lg: pg.lg, cpu: pg.cpu, logs: pg.logs},
	}
	for r := range h.o.Rounds {
		for i := range rows {
			t := rows[(i+r)%len(rows)]
			s, err := h.measure(ctx, t, h.createScript, []string{fmt.Sprintf("r%d-%s", r, t.Key)}, h.o.CreateDuration)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", r+1, t.Name, err)
			}
			t.runs = append(t.runs, s)
			h.logf("round %d/%d %-16s %9.0f creates/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  created/request %.3f",
				r+1, h.o.Rounds, t.Key, s.RPS(), ms(s.P50US), ms(s.P99US), s.Errors(), s.Created)
		}
	}
	return rows, nil
}

// coldRow is one run of a Go client that reads a list of codes once each.
type coldRow struct {
	Name  string
	Codes int
	Stats resolveStats
	Note  string
}

// coldRun starts a fresh production instance with an empty LRU and an empty
// Redis database, reads every code in PostgreSQL once (cold), then once more
// (warm, same client), and stops it.
func (h *harness) coldRun(ctx context.Context) ([]coldRow, error) {
	if !h.pgSeeded { // run without the redirect phase: seed through a separate instance
		seeder, err := h.startLinkgate(ctx, "lg-seed", "LINKGATE_DATABASE_URL="+h.pgURL, "LINKGATE_REDIS_URL="+h.redisURL(2))
		if err != nil {
			return nil, err
		}
		err = seedLinks(ctx, seeder.addr, h.links, 16, 5*time.Minute)
		h.sup.stop(seeder.proc, 10*time.Second)
		if err != nil {
			return nil, err
		}
		h.pgSeeded = true
	}
	codes, err := h.pgCodes(ctx)
	if err != nil {
		return nil, err
	}
	rand.Shuffle(len(codes), func(i, j int) { codes[i], codes[j] = codes[j], codes[i] })
	lg, err := h.startLinkgate(ctx, "lg-cold", "LINKGATE_DATABASE_URL="+h.pgURL, "LINKGATE_REDIS_URL="+h.redisURL(1),
		fmt.Sprintf("LINKGATE_CACHE_SIZE=%d", len(codes)+10000), "LINKGATE_CACHE_TTL=1h")
	if err != nil {
		return nil, err
	}
	defer h.sup.stop(lg.proc, 10*time.Second)
	h.logf("cold cache: reading %d codes once each (production, empty LRU and Redis)", len(codes))
	cold, err := resolveAll(ctx, lg.addr, codes, h.o.Connections, time.Now().Add(3*time.Minute))
	if err != nil {
		return nil, err
	}
	rand.Shuffle(len(codes), func(i, j int) { codes[i], codes[j] = codes[j], codes[i] })
	warm, err := resolveAll(ctx, lg.addr, codes, h.o.Connections, time.Now().Add(3*time.Minute))
	if err != nil {
		return nil, err
	}
	h.logf("cold %.0f req/s p99 %v; warm %.0f req/s p99 %v", cold.RPS(), cold.P99, warm.RPS(), warm.P99)
	return []coldRow{
		{Name: "cold: production, empty LRU and Redis L2 (PostgreSQL read, Redis fill)", Codes: len(codes), Stats: cold,
			Note: fmt.Sprintf("%.2fx the warm pass below", cold.RPS()/warm.RPS())},
		{Name: "warm: the same codes again, same instance (LRU hits)", Codes: len(codes), Stats: warm},
	}, nil
}

// goBench runs the Go micro-benchmarks into -go-bench-out.
func (h *harness) goBench(ctx context.Context) error {
	pkgs := []string{"./cmd/linkgate/", "./internal/cache/", "./internal/links/", "./internal/ratelimit/", "./internal/metrics/"}
	h.logf("go test -bench %s (count %d)", strings.Join(pkgs, " "), h.o.GoBenchCount)
	cctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	args := goBenchArgs(h.o, pkgs)
	cmd := exec.CommandContext(cctx, h.o.Go, args...)
	cmd.Dir = h.root
	out, err := cmd.CombinedOutput()
	if werr := writeFile(h.path(h.o.GoBenchOut), string(out)); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("go %s: %w (output in %s)", strings.Join(args, " "), err, h.o.GoBenchOut)
	}
	return nil
}

// goBenchArgs are the go command's arguments for the micro-benchmarks of pkgs.
// -p 1 runs one package's test binary at a time: by default go test runs as
// many as there are cores, so on a small machine two packages' benchmarks
// would share the cores and each one's ns/op would depend on what the other
// ran at that moment (measured here: BenchmarkStack/target=production 7.3-10
// µs/op beside another package, 3.0-3.7 alone).
func goBenchArgs(o options, pkgs []string) []string {
	args := []string{"test", "-p", "1", "-run", "^$", "-bench", ".", "-benchmem", "-count", fmt.Sprint(o.GoBenchCount)}
	if o.GoBenchTime != "" {
		args = append(args, "-benchtime", o.GoBenchTime)
	}
	return append(args, pkgs...)
}

// goBenchCommand is the micro-benchmarks' command line as the report prints
// it (without the packages), with -run's pattern quoted for a shell.
func goBenchCommand(o options) string {
	args := goBenchArgs(o, nil)
	for i, a := range args {
		if a == "^$" {
			args[i] = "'^$'"
		}
	}
	return "go " + strings.Join(args, " ")
}

// ms converts microseconds to milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }
