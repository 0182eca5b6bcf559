package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// report is everything one run measured.
type report struct {
	Date       time.Time
	Cores      int
	CPU        string
	Opts       options
	Load0      string
	Load1      string
	BusyShare  float64 // share of all CPU time busy over the run (all processes)
	Go, Wrk    string
	Nginx      string
	Redis      string
	Commit     string
	PG         string
	GoBench    string
	FloodGuard []string
	SeedSQLite time.Duration
	SeedPG     time.Duration
	Wall       time.Duration

	Targets []*target
	Creates []*target
	Budget  []*target // the baseline with budgetWork added, in that order
	Cold    []coldRow
	Memory  []memRow
}

// cpuPerRequest is the median server CPU per request of t, in µs.
func cpuPerRequest(t *target) float64 {
	var us []float64
	for _, s := range t.runs {
		us = append(us, s.ServerUS)
	}
	return median(us)
}

func numCPU() int { return runtime.NumCPU() }

// rpsStats are the median and range of a target's per-round rates.
func rpsStats(t *target) (med, lo, hi float64) {
	xs := make([]float64, len(t.runs))
	for i, s := range t.runs {
		xs[i] = s.RPS()
	}
	lo, hi = minMax(xs)
	return median(xs), lo, hi
}

// latStats are the medians of the per-round p50 and p99, and the worst p99.
func latStats(t *target) (p50, p99, p99max float64) {
	var a, b []float64
	for _, s := range t.runs {
		a = append(a, ms(s.P50US))
		b = append(b, ms(s.P99US))
	}
	_, p99max = minMax(b)
	return median(a), median(b), p99max
}

// ratio is median(t)/median(base) and the range of the per-round ratios
// (round i of t over round i of base).
func ratio(t, base *target) (r, lo, hi float64) {
	mt, _, _ := rpsStats(t)
	mb, _, _ := rpsStats(base)
	if mb == 0 {
		return 0, 0, 0
	}
	var per []float64
	for i := range min(len(t.runs), len(base.runs)) {
		if b := base.runs[i].RPS(); b > 0 {
			per = append(per, t.runs[i].RPS()/b)
		}
	}
	lo, hi = minMax(per)
	return mt / mb, lo, hi
}

// judged is v, or a note that a -wrk-batch run judges no goal: the goals are
// defined with wrk sharing the cores as an ordinary task.
func judged(o options, v string) string {
	if o.WrkBatch && v != "" {
		return "not judged (-wrk-batch)"
	}
	return v
}

// verdict checks t against its goal.
func verdict(t *target, base *target) string {
	g := t.Goal
	if g.Label == "" {
		return ""
	}
	ok := true
	var why []string
	if g.MinRatio > 0 && base != nil {
		r, _, _ := ratio(t, base)
		if r < g.MinRatio {
			ok = false
			why = append(why, fmt.Sprintf("ratio %.2f < %.2f", r, g.MinRatio))
		}
	}
	if g.MaxP99 > 0 {
		_, p99, _ := latStats(t)
		if p99 > float64(g.MaxP99)/float64(time.Millisecond) {
			ok = false
			why = append(why, fmt.Sprintf("p99 %.2f ms > %v", p99, g.MaxP99))
		}
	}
	if g.MinRPS > 0 {
		m, _, _ := rpsStats(t)
		if m < g.MinRPS {
			ok = false
			why = append(why, fmt.Sprintf("%.0f/s < %.0f/s", m, g.MinRPS))
		}
	}
	if ok {
		return "pass"
	}
	return "**FAIL** (" + strings.Join(why, ", ") + ")"
}

func goalText(g goal) string {
	var parts []string
	if g.MinRatio > 0 {
		parts = append(parts, fmt.Sprintf("≥ %.2fx", g.MinRatio))
	}
	if g.MaxP99 > 0 {
		parts = append(parts, fmt.Sprintf("p99 ≤ %v", g.MaxP99))
	}
	if g.MinRPS > 0 {
		parts = append(parts, "≥ "+thousands(g.MinRPS)+"/s")
	}
	if len(parts) == 0 {
		return ""
	}
	return g.Label + ": " + strings.Join(parts, ", ")
}

// thousands formats x rounded, with comma separators.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func durMS(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.Opts
	logs := "a file per process, truncated after each run"
	if o.Logs == "null" {
		logs = "/dev/null"
	}
	w("# linkgate benchmark results\n\n")
	w("Written by `make bench` (`go run ./loadtest/bench`) on %s UTC, commit `%s`.\n\n", r.Date.Format("2006-01-02 15:04"), r.Commit)
	w("- Machine: %d cores (%s); load average %s at the start, %s at the end; all CPUs %.0f%% busy over the run (every process on the machine, not only these).\n",
		r.Cores, r.CPU, r.Load0, r.Load1, 100*r.BusyShare)
	sharing := "sharing the cores with the servers"
	if o.WrkBatch {
		sharing += " **under SCHED_BATCH** (`-wrk-batch`, a diagnostic run: wrk's wakeups do not preempt the servers; no goal is judged)"
	}
	w("- Load: %s, %d threads and %d connections, %s; %v per run after a %v warm-up per target; %d rounds, every target once per round in a rotated order; GET of %s existing codes picked uniformly at random; everything on 127.0.0.1.\n",
		r.Wrk, o.Threads, o.Connections, sharing, o.Duration, o.Warmup, o.Rounds, thousands(float64(o.Codes)))
	w("- linkgate as shipped: JSON access log (`LINKGATE_LOG_LEVEL=info`) to %s, metrics on, click counting on; limiter policies on but generous (`%s`: wrk is one address, so one bucket). nginx access logs (shipped config) to the same place.\n", logs, generous)
	w("- Versions: %s; %s; %s. PostgreSQL: %s (a fresh database, dropped afterwards); Redis: a private redis-server without persistence.\n\n", r.Go, r.Nginx, r.Redis, r.PG)

	byKey := map[string]*target{}
	var others []float64
	for _, t := range r.Targets {
		byKey[t.Key] = t
		for _, s := range t.runs {
			others = append(others, max(0, s.BusyCores-s.ServerCores-s.WrkCores))
		}
	}
	if o := median(others); o > 0.25 {
		w("> **Shared machine:** during the median redirect run, processes other than the target and wrk took %.2f of the %d cores (PostgreSQL, the kernel's unattributed share, and whatever else ran). Rates and ratios moved with it; the server CPU per request below is the steadier comparison.\n\n", o, r.Cores)
	}
	w("## Redirects\n\n")
	w("Rates are medians over the rounds with [min–max]; p50 and p99 are medians of the per-round wrk percentiles (worst p99 in brackets). The ratio is median over median of the row named in \"vs\", with the range of the per-round ratios.\n\n")
	w("| target | req/s | p50 | p99 | vs | ratio | goal | result |\n|---|---:|---:|---:|---|---:|---|---|\n")
	for _, t := range r.Targets {
		med, lo, hi := rpsStats(t)
		p50, p99, p99max := latStats(t)
		vs, rat := "", ""
		base := byKey[t.Baseline]
		if base != nil {
			x, l, hh := ratio(t, base)
			vs = base.Key
			rat = fmt.Sprintf("%.2fx [%.2f–%.2f]", x, l, hh)
		}
		w("| %s | %s [%s–%s] | %.2f ms | %.2f ms [%.2f] | %s | %s | %s | %s |\n", t.Name, thousands(med), thousands(lo), thousands(hi),
			p50, p99, p99max, vs, rat, goalText(t.Goal), judged(o, verdict(t, base)))
	}
	w("\nKeys: ")
	for i, t := range r.Targets {
		if i > 0 {
			w("; ")
		}
		w("`%s` = %s", t.Key, t.Name)
	}
	w(".\n\n")

	w("Where the CPU went (medians over the rounds, in cores out of %d). \"server\" counts the target's own processes (nginx master and workers, linkgate, the private redis-server for production rows; not PostgreSQL); \"other\" is the rest of the machine (PostgreSQL, the kernel's share not charged to a process, anything else running). \"server CPU per request\" is the server side's CPU time over the requests answered, and \"vs\" divides it by the baseline's: unlike the rate, it does not depend on how much CPU wrk and the neighbours took. \"preempted\" and \"blocked\" are the server threads' context switches per request (involuntary: the kernel gave the CPU to another task, mostly a wrk thread its response woke, or a slice ran out; voluntary: the thread waited, in epoll_wait or a futex). A run with `-wrk-batch` (wrk's wakeups then preempt nothing) shows what the preemptions cost.\n\n", r.Cores)
	w("| target | server | wrk | other | whole machine | server CPU per request | vs | preempted/request | blocked/request | failed requests | log lines/request | limiter decisions/request |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, t := range append(append([]*target{}, r.Targets...), r.Creates...) {
		var srv, wrk, busy, dec, us, pre, blk []float64
		var errs int64
		logs := map[int][]float64{}
		for _, s := range t.runs {
			srv = append(srv, s.ServerCores)
			us = append(us, s.ServerUS)
			pre = append(pre, s.Preempted)
			blk = append(blk, s.Blocked)
			wrk = append(wrk, s.WrkCores)
			busy = append(busy, s.BusyCores)
			errs += s.Errors()
			if s.Decisions >= 0 {
				dec = append(dec, s.Decisions)
			}
			for i, l := range s.LogLines {
				logs[i] = append(logs[i], l)
			}
		}
		var ll []string
		for i := range len(logs) {
			name := t.logs[i].name
			ll = append(ll, fmt.Sprintf("%s %.2f", name, median(logs[i])))
		}
		decs := "–"
		if len(dec) > 0 {
			decs = fmt.Sprintf("%.2f", median(dec))
		}
		other := median(busy) - median(srv) - median(wrk)
		vs := ""
		if base := byKey[t.Baseline]; base != nil {
			vs = fmt.Sprintf("%.2fx %s", median(us)/cpuPerRequest(base), base.Key)
		}
		w("| %s | %.2f | %.2f | %.2f | %.2f | %.1f µs | %s | %.3f | %.3f | %d | %s | %s |\n", t.Key, median(srv), median(wrk), max(other, 0), median(busy),
			median(us), vs, median(pre), median(blk), errs, orDash(strings.Join(ll, ", ")), decs)
	}
	w("\n")

	if len(r.Creates) > 0 {
		w("## Creates\n\n")
		w("`POST /api/v1/links` with a unique URL per request (random 7-character codes), %d connections, %v per run, %d rounds interleaved. Every 201 is durable: SQLite commits with `synchronous=FULL` through linkgate's single writer; PostgreSQL with the server's settings above.\n\n",
			o.Connections, o.CreateDuration, o.Rounds)
		w("| store | creates/s | p50 | p99 | links created per request | goal | result |\n|---|---:|---:|---:|---:|---|---|\n")
		for _, t := range r.Creates {
			med, lo, hi := rpsStats(t)
			p50, p99, p99max := latStats(t)
			var cr []float64
			for _, s := range t.runs {
				if s.Created >= 0 {
					cr = append(cr, s.Created)
				}
			}
			created := "–"
			if len(cr) > 0 {
				created = fmt.Sprintf("%.3f", median(cr))
			}
			w("| %s | %s [%s–%s] | %.2f ms | %.2f ms [%.2f] | %s | %s | %s |\n", t.Name, thousands(med), thousands(lo), thousands(hi),
				p50, p99, p99max, created, goalText(t.Goal), judged(o, verdict(t, nil)))
		}
		w("\nSeeding %s links with custom codes through the API (16 concurrent clients) took %v on SQLite and %v on PostgreSQL.\n\n",
			thousands(float64(o.Codes)), r.SeedSQLite.Round(time.Millisecond), r.SeedPG.Round(time.Millisecond))
	}

	if len(r.Budget) == len(budgetWork) {
		r.budgetSection(w, byKey)
	}

	if len(r.Cold) > 0 {
		w("## Cold cache\n\n")
		w("A Go client (fasthttp, %d connections) reads every code exactly once in random order, so every request misses the in-process LRU (and, in production, Redis). Same machine sharing, not wrk, so compare a cold row with the warm row measured by the same client.\n\n", o.Connections)
		w("| run | codes | req/s | p50 | p99 | note |\n|---|---:|---:|---:|---:|---|\n")
		for _, c := range r.Cold {
			w("| %s | %s | %s | %s | %s | %s |\n", c.Name, thousands(float64(c.Codes)), thousands(c.Stats.RPS()),
				durMS(c.Stats.P50), durMS(c.Stats.P99), c.Note)
		}
		w("\n")
	}

	if len(r.Memory) > 0 {
		m0 := r.Memory[0]
		w("## Memory\n\n")
		w("linkgate embedded (SQLite) with `LINKGATE_CACHE_SIZE` above the link count and a 1 h LRU TTL. %s links were written straight into SQLite in one transaction (bench-only seeding, %v; the schema comes from linkgate's own migrations), then resolved once each over HTTP by the Go client above. The baseline VmRSS is read after a warm-up (2 s of `/live`, 1,000 other links resolved) with the LRU otherwise empty; each reading waits for the click flush and for VmRSS to settle.\n\n",
			thousands(float64(m0.SeedTotal)), m0.SeedDuration.Round(time.Millisecond))
		w("Formula: bytes per link = (VmRSS after − VmRSS baseline) / (LRU entries added, from `linkgate_cache_entries{layer=\"lru\"}`); beyond the URL = that − mean URL length (%.1f bytes here). It charges everything that grew with the links: LRU entries, the Go heap's headroom (GOGC=100), the click counter's map, SQLite's page cache.\n\n", m0.MeanURL)
		w("| links in the LRU | VmRSS baseline → after | bytes/link | beyond the URL | Go heap in use/link | goal | result |\n|---|---:|---:|---:|---:|---|---|\n")
		for _, m := range r.Memory {
			g, res := "", ""
			if m.MaxBeyondURL > 0 {
				g = fmt.Sprintf("#5: ≤ %.0f B", m.MaxBeyondURL)
				res = "pass"
				if m.BeyondURL > m.MaxBeyondURL {
					res = fmt.Sprintf("**FAIL** (%.0f B > %.0f B)", m.BeyondURL, m.MaxBeyondURL)
				}
			}
			links := thousands(m.Entries)
			if m.Incomplete {
				links += fmt.Sprintf(" (resolution stopped at the %v bound)", r.Opts.MemTimeout)
			}
			w("| %s | %s → %s | %.0f B | %.0f B | %.0f B | %s | %s |\n", links, mib(m.RSS0), mib(m.RSS), m.PerLink, m.BeyondURL,
				m.HeapPerLink, g, res)
		}
		w("\n")
	}

	w("## Notes\n\n")
	switch {
	case len(r.Targets) == 0:
		// no nginx rows
	case len(r.FloodGuard) > 0:
		w("- The nginx rows use `deploy/nginx/nginx.conf` with the documented test substitutions (listen ports, one upstream, pid and temp paths) and one more: the per-IP flood guard `%s` is removed, because all wrk traffic comes from 127.0.0.1 and would be answered 429 after 100 r/s. `limit_conn` (200 per IP) stays. Both nginx rows get the same file.\n",
			strings.Join(r.FloodGuard, "`, `"))
	default:
		w("- The nginx rows use `deploy/nginx/nginx.conf` with the documented test substitutions only (no per-IP `limit_req` line was found to remove).\n")
	}
	if bm, base := byKey["baseline-metrics"], byKey["baseline"]; bm != nil && base != nil {
		x, _, _ := ratio(bm, base)
		w("- `baseline-metrics` is the baseline with fiberprometheus, the HTTP metrics library the project requires, registered as linkgate registers it (and nothing else of linkgate's): %.2fx the baseline here, %+.1f µs of server CPU per request. That share of every direct linkgate ratio is the library's, not linkgate's code.\n",
			x, cpuPerRequest(bm)-cpuPerRequest(base))
	}
	var unlimited []string
	for _, t := range r.Targets {
		if t.lg == nil || t.Key == "lg-prod-nolimit" {
			continue
		}
		var dec []float64
		for _, s := range t.runs {
			if s.Decisions >= 0 {
				dec = append(dec, s.Decisions)
			}
		}
		if median(dec) < 0.5 {
			unlimited = append(unlimited, "`"+t.Key+"`")
		}
	}
	if len(unlimited) > 0 {
		w("- **The redirect limiter made no decisions** in %s although configured on: this linkgate build does not run it on redirects. Those rows measure linkgate without the limiter, and `lg-prod` and `lg-prod-nolimit` ran the same configuration, so their difference is run-to-run noise.\n",
			strings.Join(unlimited, ", "))
	}
	w("- Failed requests are wrk's socket errors, timeouts and answers above 399; every target was first checked to answer 302 with the right Location.\n")
	w("- \"limiter decisions/request\" reads `linkgate_ratelimit_decisions_total{policy=\"redirect\"}` before and after each run: about 1 when the redirect limiter runs, 0 when it is off or not wired in.\n")
	if r.GoBench != "" {
		w("- Go micro-benchmarks (resolve on an L1 hit, limiter decisions, code generation, URL validation, metrics): `%s`, benchstat input (`%s`, one package at a time).\n", r.GoBench, goBenchCommand(o))
	}
	w("- Wall time of the whole run: %v.\n", r.Wall.Round(time.Second))
	return b.String()
}

// budgetSection writes the budget phase's table and, for each ratio goal,
// the most work per request that still met it, beside what linkgate's
// targets (in byKey, when the redirect phase ran) cost over the baseline.
func (r *report) budgetSection(w func(string, ...any), byKey map[string]*target) {
	zero := r.Budget[0]
	over := func(t *target) float64 { return cpuPerRequest(t) - cpuPerRequest(zero) }
	w("## Work budget\n\n")
	w("The minimal Fiber baseline again, once per amount of pure CPU added to every request (integer arithmetic calibrated at start on the thread's CPU clock, no clock reads, no memory: `mapserver.Options.Work`), in %d rounds of its own like the redirect targets'. It shows how far the rate falls per µs of work a server adds on this machine with wrk sharing the cores, which is what the direct ratio goals compare. The added work is nominal; \"over none\" is measured (server CPU per request over the row without work) and includes what the work costs the kernel and the scheduler (more preemptions by wrk): set that column, not the nominal one, beside linkgate's.\n\n", r.Opts.Rounds)
	w("| added work | req/s | p99 | ratio vs none | server CPU per request | over none |\n|---|---:|---:|---:|---:|---:|\n")
	ratios := make([]float64, len(r.Budget))
	for i, t := range r.Budget {
		med, lo, hi := rpsStats(t)
		_, p99, _ := latStats(t)
		x, l, h := ratio(t, zero)
		ratios[i] = x
		w("| %s | %s [%s–%s] | %.2f ms | %.2fx [%.2f–%.2f] | %.1f µs | %+.1f µs |\n", workLabel(budgetWork[i]), thousands(med), thousands(lo), thousands(hi),
			p99, x, l, h, cpuPerRequest(t), over(t))
	}
	w("\n")
	if r.Opts.WrkBatch {
		w("No goal is judged in a `-wrk-batch` run; the table shows the rates without wrk's preemptions.\n\n")
		return
	}
	// step describes budget step i against the goal ratio g.
	step := func(i int, g float64) string {
		return fmt.Sprintf("%s (%+.1f µs measured, %.2fx, %d of %d rounds at or above)", workLabel(budgetWork[i]), over(r.Budget[i]),
			ratios[i], roundsMeeting(r.Budget[i], zero, g), min(len(r.Budget[i].runs), len(zero.runs)))
	}
	for _, g := range []struct {
		ratio float64
		goals string
	}{{0.85, "#3, linkgate direct"}, {0.75, "the ratio part of #1"}} {
		switch last := lastMeeting(ratios, g.ratio); {
		case last == len(ratios)-1:
			w("- %.2fx (%s): met up to the largest step, %s.\n", g.ratio, g.goals, step(last, g.ratio))
		case last >= 1:
			w("- %.2fx (%s): met with %s; missed with %s.\n", g.ratio, g.goals, step(last, g.ratio), step(last+1, g.ratio))
		default:
			w("- %.2fx (%s): missed already with the smallest step, %s.\n", g.ratio, g.goals, step(1, g.ratio))
		}
	}
	w("- The per-round ratios of neighbouring steps overlap (the ranges above), so read a threshold as a band of a step either way. Goal #2 is not read from this table: it compares two rows behind nginx, whose denominator costs several times the CPU per request of the direct baseline (see `nginx-baseline` above), so the same µs cost it less ratio.\n")
	if base := byKey["baseline"]; base != nil {
		var lg []string
		for _, k := range []string{"baseline-metrics", "lg-embedded", "lg-prod", "lg-prod-nolimit"} {
			if t := byKey[k]; t != nil {
				lg = append(lg, fmt.Sprintf("`%s` %+.1f µs", k, cpuPerRequest(t)-cpuPerRequest(base)))
			}
		}
		w("- For comparison, server CPU per request over the baseline in this run's redirect rounds: %s.\n", strings.Join(lg, ", "))
	}
	w("\n")
}

// roundsMeeting counts the rounds in which t's rate was at least g times
// base's in the same round.
func roundsMeeting(t, base *target, g float64) int {
	n := 0
	for i := range min(len(t.runs), len(base.runs)) {
		if b := base.runs[i].RPS(); b > 0 && t.runs[i].RPS()/b >= g {
			n++
		}
	}
	return n
}

// lastMeeting is the index of the largest step whose ratio is at least
// goal with every smaller step's too (a later step back above the goal is
// noise, not room); -1 when the first step is below it.
func lastMeeting(ratios []float64, goal float64) int {
	last := -1
	for i, r := range ratios {
		if r < goal {
			break
		}
		last = i
	}
	return last
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// workLabel names an amount of budget work in the table ("none" for zero).
func workLabel(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}
