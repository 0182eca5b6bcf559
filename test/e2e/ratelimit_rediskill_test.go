package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/testenv"
)

// rlSample is one request of a load: which kind, on which instance, when it
// started, how long it took, and what came back (r is the RateLimit r of a
// create, -1 when absent).
type rlSample struct {
	create bool
	inst   int
	start  time.Time
	took   time.Duration
	status int
	r      int64
	err    error
	bad    string // why the answer is wrong, "" when it is right
}

// rlTarget is a link the load redirects to.
type rlTarget struct{ code, url string }

// rlLoad is a mixed load on some instances: redirectWorkers redirect
// clients spread over the instances, each sending a request every
// redirectEvery (or as soon as the previous answer came, when it is late),
// and on every instance one client that creates a link every createEvery (anonymously, so all creates
// share the bucket of ip:127.0.0.1). Every answer is checked: a redirect
// must be a 302 to the target without limiter fields, a create a 201.
type rlLoad struct {
	stop    context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []rlSample
}

func rlStartLoad(servers []*server, targets []rlTarget, redirectWorkers int, redirectEvery, createEvery time.Duration) *rlLoad {
	ctx, stop := context.WithCancel(context.Background())
	l := &rlLoad{stop: stop}
	record := func(local []rlSample) {
		l.mu.Lock()
		l.samples = append(l.samples, local...)
		l.mu.Unlock()
	}
	for w := 0; w < redirectWorkers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			inst := w % len(servers)
			c := edgeClient("")
			defer c.CloseIdleConnections()
			tick := time.NewTicker(redirectEvery) // pacing of the load, not synchronisation
			defer tick.Stop()
			var local []rlSample
			defer func() { record(local) }()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				tg := targets[rand.IntN(len(targets))]
				s := rlSample{inst: inst, start: time.Now(), r: -1}
				resp, err := edgeDo(c, "GET", servers[inst].URL+"/"+tg.code, nil)
				s.took, s.err, s.status = time.Since(s.start), err, resp.Status
				switch {
				case err != nil:
				case resp.Status != http.StatusFound || resp.Header.Get("Location") != tg.url:
					s.bad = fmt.Sprintf("GET /%s: %d Location %q, want 302 to %s: %s",
						tg.code, resp.Status, resp.Header.Get("Location"), tg.url, resp.Body)
				case resp.Header.Get("RateLimit") != "" || resp.Header.Get("RateLimit-Policy") != "":
					s.bad = fmt.Sprintf("302 with limiter fields %v", resp.Header)
				}
				local = append(local, s)
			}
		}(w)
	}
	for inst := range servers {
		l.wg.Add(1)
		go func(inst int) {
			defer l.wg.Done()
			c := edgeClient("")
			defer c.CloseIdleConnections()
			tick := time.NewTicker(createEvery) // pacing of the load, not synchronisation
			defer tick.Stop()
			var local []rlSample
			defer func() { record(local) }()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				s := rlSample{create: true, inst: inst, start: time.Now(), r: -1}
				body := fmt.Sprintf(`{"url":"https://example.com/rlload/%d/%d"}`, inst, i)
				resp, err := edgeDo(c, "POST", servers[inst].URL+"/api/v1/links", []byte(body), jsonCT)
				s.took, s.err, s.status = time.Since(s.start), err, resp.Status
				if err == nil {
					if m := rlRateLimitRe.FindStringSubmatch(resp.Header.Get("RateLimit")); m != nil && m[1] == "create" {
						s.r, _ = strconv.ParseInt(m[2], 10, 64)
					}
					if resp.Status != http.StatusCreated || s.r < 0 {
						s.bad = fmt.Sprintf("POST: %d RateLimit %q: %s", resp.Status, resp.Header.Get("RateLimit"), resp.Body)
					}
				}
				local = append(local, s)
			}
		}(inst)
	}
	return l
}

// finish stops the load and returns every sample; safe to call twice.
func (l *rlLoad) finish() []rlSample {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.samples
}

// rlTargets creates n links with the admin key (its own create bucket) and
// returns them.
func rlTargets(t *testing.T, s *server, n int) []rlTarget {
	t.Helper()
	out := make([]rlTarget, n)
	for i := range out {
		url := fmt.Sprintf("https://example.com/rltarget/%d", i)
		r := do(t, "POST", s.URL+"/api/v1/links", []byte(fmt.Sprintf(`{"url":%q}`, url)), jsonCT, adminAuth)
		if r.Status != http.StatusCreated {
			t.Fatalf("create target %d: %d %s", i, r.Status, r.Body)
		}
		out[i] = rlTarget{code: r.json(t)["code"].(string), url: url}
	}
	return out
}

// rlCheckSamples fails the test for transport errors and wrong answers and
// returns the latencies.
func rlCheckSamples(t *testing.T, samples []rlSample) []time.Duration {
	t.Helper()
	var errs, bad int
	var examples []string
	lat := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		lat = append(lat, s.took)
		if s.err != nil || s.bad != "" {
			if s.err != nil {
				errs++
			} else {
				bad++
			}
			if len(examples) < 8 {
				examples = append(examples, fmt.Sprintf("instance %d at %s: err %v %s",
					s.inst, s.start.Format("15:04:05.000"), s.err, s.bad))
			}
		}
	}
	if errs+bad > 0 {
		t.Errorf("%d transport errors and %d wrong answers of %d requests, e.g.:\n%s",
			errs, bad, len(samples), strings.Join(examples, "\n"))
	}
	return lat
}

// rlWaitUntil blocks until the load schedule reaches at. It paces the test;
// it synchronises with nothing.
func rlWaitUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		<-time.After(d)
	}
}

// Issue 4, item 5: Redis is SIGKILLed under a mixed load on two instances
// (redirect policy generous and failing open, create 50/1s:50 shared, so
// 25/s with a burst of 25 per instance while Redis is down; the load creates
// 10/s per instance) and started again 7 s later, empty.
//
//   - Every redirect is a 302 and every create a 201: no error, no 5xx, no
//     connection failure.
//   - While Redis is down both instances report
//     linkgate_ratelimit_fallback_active 1 and count backend errors and
//     fail-open redirect decisions; creates are decided by the local bucket
//     (their RateLimit r is at most 24, the local burst less one), while
//     before the kill and after the recovery the shared Redis bucket of 50
//     answers (r >= 25).
//   - Within 6 s of Redis's return both report 0 again, and the redirect
//     bucket reappears in Redis.
//   - 99.9% of requests take under 300 ms, and none 1 s or more (see the
//     bounds below).
func TestRateLimitRedisKilledDuringLoad(t *testing.T) {
	const (
		redirectWorkers = 4
		redirectEvery   = 2 * time.Millisecond
		createEvery     = 100 * time.Millisecond
		upPhase         = 5 * time.Second
		downPhase       = 7 * time.Second
		backPhase       = 6 * time.Second
		localBurst      = 25 // ⌈50 / LINKGATE_INSTANCES⌉
	)
	r, rdb := rlRedis(t)
	db := testenv.PostgresURL(t)
	env := append([]string{"LINKGATE_REDIS_URL=" + r.URL(), "LINKGATE_INSTANCES=2"},
		rlPolicies("1000000/1h:1000000", "50/1s:50", "off")...)
	servers := []*server{startServer(t, db, env...), startServer(t, db, env...)}
	targets := rlTargets(t, servers[0], 40)

	gauge := func(s *server) float64 { return scrape(t, s)["linkgate_ratelimit_fallback_active"] }
	counters := func(s *server) [2]float64 {
		m := scrape(t, s)
		return [2]float64{m["linkgate_ratelimit_backend_errors_total"], m[rlDecisions("redirect", "fail_open")]}
	}
	const redirectKey = "lg:rl:{redirect:ip:127.0.0.1}"

	var atStart, atEnd [2][2]float64
	for i, s := range servers {
		atStart[i] = counters(s)
	}
	load := rlStartLoad(servers, targets, redirectWorkers, redirectEvery, createEvery)
	defer load.finish()
	loadStart := time.Now()

	// Phase 0: Redis up and deciding.
	rlWaitUntil(loadStart.Add(upPhase))
	// Polled, not read once: a stall of the shared machine past the 50 ms
	// Redis timeout may open the breaker for one open period even with Redis
	// up; a limiter stuck in the fallback would stay at 1.
	var beforeKill [2][2]float64
	for i, s := range servers {
		testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("instance %d to report the fallback inactive before Redis is killed", i),
			func() bool { return gauge(s) == 0 })
		beforeKill[i] = counters(s)
	}
	if n, err := rdb.Exists(context.Background(), redirectKey).Result(); err != nil || n != 1 {
		t.Fatalf("before the kill Redis has no %s (%d, %v): the limiter is not using Redis", redirectKey, n, err)
	}

	// Phase 1: Redis killed.
	r.Kill()
	killed := time.Now()
	var openedIn [2]time.Duration
	for i, s := range servers {
		testenv.WaitFor(t, 3*time.Second, fmt.Sprintf("instance %d to report the fallback active", i),
			func() bool { return gauge(s) == 1 })
		openedIn[i] = time.Since(killed)
	}
	rlWaitUntil(killed.Add(downPhase))
	var beforeStart [2][2]float64
	for i, s := range servers {
		if g := gauge(s); g != 1 {
			t.Errorf("instance %d: fallback_active %v at the end of the outage, want 1", i, g)
		}
		beforeStart[i] = counters(s)
	}

	// Phase 2: Redis back on the same port, empty.
	r.Start()
	started := time.Now()
	var recoveredAt [2]time.Time
	testenv.WaitFor(t, 6*time.Second, "both instances to report the fallback inactive", func() bool {
		done := true
		for i, s := range servers {
			if recoveredAt[i].IsZero() && gauge(s) == 0 {
				recoveredAt[i] = time.Now()
			}
			done = done && !recoveredAt[i].IsZero()
		}
		return done
	})
	var keyBackIn time.Duration
	testenv.WaitFor(t, 3*time.Second, "the redirect bucket to reappear in Redis", func() bool {
		n, err := rdb.Exists(context.Background(), redirectKey).Result()
		keyBackIn = time.Since(started)
		return err == nil && n == 1
	})
	rlWaitUntil(started.Add(backPhase))
	samples := load.finish()
	elapsed := time.Since(loadStart)
	for i, s := range servers {
		atEnd[i] = counters(s)
	}

	// Bound: the limiter may spend at most LINKGATE_REDIS_TIMEOUT (50 ms) on
	// a decision, and the cache as long on each of its Redis calls; with the
	// breaker open the limiter makes no call at all. A loopback request
	// otherwise takes a few ms, so 200 ms covers the limiter plus the cache
	// with room to spare, and another 100 ms absorbs scheduling on two
	// cores shared by two instances, PostgreSQL, Redis and the load
	// generator. (Measured: creates wait 50 ms for the cache's invalidation
	// during the first seconds of the outage, redirects never over 40 ms.)
	// A decision that waited on a dead Redis for go-redis's default timeouts
	// (seconds), or a breaker that did not stop the calls, would break it.
	// It holds for 99.9% of the requests; the slowest one only has to stay
	// under worst: one stall of the shared machine delays every request in
	// flight (CI measured maxima up to 238 ms), while the wait this test is
	// after is seconds long. The limiter's own 200 ms bound is asserted on
	// its decisions, without HTTP, by internal/ratelimit's
	// TestFallbackRedisKilled.
	const bound, worst = 300 * time.Millisecond, time.Second
	lat := rlCheckSamples(t, samples)

	type phaseStats struct{ redirects, creates, createsLocal, createsShared int }
	var ph [3]phaseStats
	var sharedDuringOutage, localOutsideOutage []string
	for _, s := range samples {
		end := s.start.Add(s.took)
		p := 0
		switch {
		case s.start.After(killed) && end.Before(started):
			p = 1
		case !recoveredAt[s.inst].IsZero() && s.start.After(recoveredAt[s.inst]):
			p = 2
		case end.After(killed):
			continue // in flight at a transition
		}
		if !s.create {
			ph[p].redirects++
			continue
		}
		ph[p].creates++
		if s.r < 0 {
			continue
		}
		if s.r < localBurst {
			ph[p].createsLocal++
			if p != 1 {
				localOutsideOutage = append(localOutsideOutage, fmt.Sprintf("phase %d instance %d r=%d", p, s.inst, s.r))
			}
		} else {
			ph[p].createsShared++
			if p == 1 {
				sharedDuringOutage = append(sharedDuringOutage, fmt.Sprintf("instance %d r=%d", s.inst, s.r))
			}
		}
	}
	t.Logf("mixed load over %v on 2 instances: %d requests (%.0f/s); redirects up/down/back %d/%d/%d, creates %d/%d/%d",
		elapsed.Round(time.Millisecond), len(samples), float64(len(samples))/elapsed.Seconds(),
		ph[0].redirects, ph[1].redirects, ph[2].redirects, ph[0].creates, ph[1].creates, ph[2].creates)
	t.Logf("latency p50=%v p99=%v p99.9=%v max=%v (bound %v)", rlPercentile(lat, 0.5), rlPercentile(lat, 0.99),
		rlPercentile(lat, 0.999), rlPercentile(lat, 1), bound)
	for i := range servers {
		t.Logf("instance %d: fallback active %v after the kill, inactive %v after Redis started; during the outage %.0f backend errors, %.0f fail-open redirects",
			i, openedIn[i].Round(time.Millisecond), recoveredAt[i].Sub(started).Round(time.Millisecond),
			beforeStart[i][0]-beforeKill[i][0], beforeStart[i][1]-beforeKill[i][1])
	}
	t.Logf("redirect bucket back in Redis %v after its start; creates decided locally during the outage %d of %d, by Redis after recovery %d of %d",
		keyBackIn.Round(time.Millisecond), ph[1].createsLocal, ph[1].creates, ph[2].createsShared, ph[2].creates)

	// Requests over 40 ms (about one Redis timeout) by phase of their start
	// and kind: where the time goes when it goes.
	var slow [3][2]int
	var slowest []string
	for _, s := range samples {
		if s.took < 40*time.Millisecond {
			continue
		}
		p, k := 0, 0
		if s.start.After(killed) {
			p = 1
		}
		if s.start.After(started) {
			p = 2
		}
		if s.create {
			k = 1
		}
		slow[p][k]++
		if s.took >= bound/3 {
			slowest = append(slowest, fmt.Sprintf("create=%v instance %d at %+.3fs (kill at %+.3fs, start at %+.3fs): %v",
				s.create, s.inst, s.start.Sub(loadStart).Seconds(), killed.Sub(loadStart).Seconds(),
				started.Sub(loadStart).Seconds(), s.took.Round(time.Millisecond)))
		}
	}
	t.Logf("requests over 40 ms [redirects creates]: Redis up %v, down %v, back %v", slow[0], slow[1], slow[2])
	if p, m := rlPercentile(lat, 0.999), rlPercentile(lat, 1); p >= bound || m >= worst {
		t.Errorf("p99.9 %v and slowest request %v, want < %v and < %v; requests over %v:\n%s",
			p, m, bound, worst, bound/3, strings.Join(slowest, "\n"))
	}
	for i := range servers {
		if beforeStart[i][0] <= beforeKill[i][0] {
			t.Errorf("instance %d counted no backend errors while Redis was down", i)
		}
		if beforeStart[i][1] <= beforeKill[i][1] {
			t.Errorf("instance %d counted no fail-open redirect decisions while Redis was down", i)
		}
	}
	for p := range ph {
		if ph[p].redirects < 200 || ph[p].creates < 20 {
			t.Errorf("phase %d had only %d redirects and %d creates: the load did not run through it", p, ph[p].redirects, ph[p].creates)
		}
	}
	if len(sharedDuringOutage) > 0 {
		t.Errorf("%d creates during the outage show the shared bucket (r >= %d), e.g. %v", len(sharedDuringOutage), localBurst, sharedDuringOutage[0])
	}
	// With Redis up a create is decided locally only when its Redis call
	// failed (a timeout on a busy machine), and each such failure is counted.
	var errorsOutside float64
	for i := range servers {
		errorsOutside += (atEnd[i][0] - atStart[i][0]) - (beforeStart[i][0] - beforeKill[i][0])
	}
	if float64(len(localOutsideOutage)) > errorsOutside {
		t.Errorf("%d creates with Redis up show a local bucket (r < %d) but only %.0f backend errors were counted outside the outage, e.g. %v",
			len(localOutsideOutage), localBurst, errorsOutside, localOutsideOutage[0])
	}
}

// Issue 4, item 5: SCRIPT FLUSH every 50 ms for 3 s under a mixed load on
// two instances. Each flush makes the next EVALSHA fail with NOSCRIPT, and
// the limiter must reload the script (EVAL) inside the same decision: every
// redirect is a 302, every create a 201, no 5xx, and the redirect bucket
// (50000/d, so it refills under one token a second) never holds fewer tokens
// than were taken: no admission without a Redis token. Redirects lease
// tokens in small batches, so the bucket may also miss the tokens still
// leased or dropped unused, a bounded number.
func TestRateLimitScriptFlushUnderLoad(t *testing.T) {
	const (
		loadFor    = 3 * time.Second
		flushEvery = 50 * time.Millisecond
	)
	r, rdb := rlRedis(t)
	db := testenv.PostgresURL(t)
	env := append([]string{"LINKGATE_REDIS_URL=" + r.URL(), "LINKGATE_INSTANCES=2"},
		rlPolicies("50000/d:50000", "1000/1s:1000", "off")...)
	servers := []*server{startServer(t, db, env...), startServer(t, db, env...)}
	targets := rlTargets(t, servers[0], 40)
	ctx := context.Background()

	load := rlStartLoad(servers, targets, 4, 2*time.Millisecond, 100*time.Millisecond)
	defer load.finish()
	loadStart := time.Now()
	flushes := 0
	tick := time.NewTicker(flushEvery) // the test's schedule of flushes, not synchronisation
	for time.Since(loadStart) < loadFor {
		<-tick.C
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		flushes++
	}
	tick.Stop()
	samples := load.finish()
	elapsed := time.Since(loadStart)
	lat := rlCheckSamples(t, samples)

	noscript := rlErrorStat(t, rdb, "NOSCRIPT")
	var allowed, failOpen, backendErrors float64
	for _, s := range servers {
		m := scrape(t, s)
		allowed += m[rlDecisions("redirect", "allowed")]
		failOpen += m[rlDecisions("redirect", "fail_open")]
		backendErrors += m["linkgate_ratelimit_backend_errors_total"]
	}
	redirects := 0
	for _, s := range samples {
		if !s.create {
			redirects++
		}
	}
	// The bucket: 50000 tokens, less one per decision Redis made, plus the
	// refill (50000 per 86400 s: under 0.6 a second) since the first one.
	// A fail-open decision (a timed-out call) may or may not have been
	// applied in Redis.
	st, err := rdb.HMGet(ctx, "lg:rl:{redirect:ip:127.0.0.1}", "t").Result()
	if err != nil || st[0] == nil {
		t.Fatalf("redirect bucket: %v %v", st, err)
	}
	scaled, err := strconv.ParseInt(fmt.Sprint(st[0]), 10, 64)
	if err != nil {
		t.Fatalf("redirect bucket t = %v: %v", st[0], err)
	}
	tokens := scaled / (86400 * 1_000_000)
	refill := int64(elapsed.Seconds()*50000/86400) + 2
	t.Logf("%d SCRIPT FLUSHes in %v under %d requests (%d redirects); Redis answered NOSCRIPT %d times; latency p50=%v p99=%v max=%v",
		flushes, elapsed.Round(time.Millisecond), len(samples), redirects, noscript,
		rlPercentile(lat, 0.5), rlPercentile(lat, 0.99), rlPercentile(lat, 1))
	t.Logf("redirect decisions allowed %.0f, fail-open %.0f; backend errors %.0f; bucket holds %d tokens (50000 - allowed = %.0f)",
		allowed, failOpen, backendErrors, tokens, 50000-allowed)

	if flushes < int(loadFor/flushEvery)/2 || noscript == 0 {
		t.Fatalf("only %d flushes and %d NOSCRIPT answers: the test did not exercise the reload", flushes, noscript)
	}
	// Polled, not read once (as before the kill in the test above): a stall
	// past the 50 ms timeout may open the breaker for one open period; a
	// limiter the flushes left in the fallback would stay at 1.
	for i, s := range servers {
		testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("instance %d to report the fallback inactive after the flushes", i),
			func() bool { return scrape(t, s)["linkgate_ratelimit_fallback_active"] == 0 })
	}
	if float64(redirects) != allowed+failOpen {
		t.Errorf("%d redirects but %.0f allowed + %.0f fail-open decisions", redirects, allowed, failOpen)
	}
	// Leases (cmd/linkgate's redirect lease size L = 64 for this slow policy, MaxAge = 1 s): each
	// instance holds at most L-1 tokens per key and drops at most that many
	// per MaxAge.
	const leaseSize, leaseMaxAge = 64, time.Second
	leased := int64(len(servers)) * (leaseSize - 1) * (2 + int64(elapsed/leaseMaxAge))
	lo, hi := int64(50000-allowed-failOpen)-leased, int64(50000-allowed)+refill
	if tokens < lo || tokens > hi {
		t.Errorf("redirect bucket holds %d tokens, want %d..%d: decisions were lost or taken twice", tokens, lo, hi)
	}
}

// rlErrorStat returns the count of one error prefix in INFO errorstats.
func rlErrorStat(t *testing.T, c *redis.Client, prefix string) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "errorstats").Result()
	if err != nil {
		t.Fatalf("INFO errorstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "errorstat_"+prefix+":count="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("errorstat_%s: %q", prefix, v)
			}
			return n
		}
	}
	return 0
}
