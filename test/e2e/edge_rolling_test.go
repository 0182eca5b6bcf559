package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// edgeLoad is a steady mixed load through nginx: 90% redirects of existing
// links, 10% creates, from several keep-alive clients with distinct source
// addresses. Any transport error or unexpected status is a failure.
type edgeLoad struct {
	url   string
	seeds []edgeLink

	requests  atomic.Int64
	redirects atomic.Int64
	failures  atomic.Int64

	mu       sync.Mutex
	created  []edgeLink
	failList []string // the first failures, for the report
}

type edgeLink struct{ code, url string }

// edgeLoadWorkers clients each send one request per edgeLoadInterval: 16 x 50
// = 800 requests/s offered; 500/s are reached while a request takes < 32 ms.
const (
	edgeLoadWorkers  = 16
	edgeLoadInterval = 20 * time.Millisecond
)

func (l *edgeLoad) fail(format string, args ...any) {
	l.failures.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failList) < 20 {
		l.failList = append(l.failList, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

// run sends requests from worker w until ctx is done.
func (l *edgeLoad) run(ctx context.Context, w int) {
	cl := edgeClient(fmt.Sprintf("127.0.0.%d", 10+w))
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	// Paced below nginx's per-address limit (100 r/s), so the flood guard
	// never answers; a stalled request delays the next ones, it does not
	// cause a burst afterwards.
	tick := time.NewTicker(edgeLoadInterval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		l.requests.Add(1)
		if rng.IntN(10) == 0 {
			target := fmt.Sprintf("https://example.com/roll/%d/%d", w, n)
			r, err := edgeDo(cl, "POST", l.url+"/api/v1/links", []byte(`{"url":"`+target+`"}`), jsonCT)
			switch {
			case err != nil:
				l.fail("POST create: %v", err)
			case r.Status != http.StatusCreated:
				l.fail("POST create: %d %s (X-Request-ID %s)", r.Status, r.Body, r.Header.Get("X-Request-ID"))
			default:
				var link struct{ Code string }
				if err := json.Unmarshal(r.Body, &link); err != nil || link.Code == "" {
					l.fail("POST create: 201 with body %q", r.Body)
					continue
				}
				code := link.Code
				l.mu.Lock()
				l.created = append(l.created, edgeLink{code, target})
				l.mu.Unlock()
			}
			continue
		}
		link := l.seeds[rng.IntN(len(l.seeds))]
		r, err := edgeDo(cl, "GET", l.url+"/"+link.code, nil)
		switch {
		case err != nil:
			l.fail("GET redirect: %v", err)
		case r.Status != http.StatusFound || r.Header.Get("Location") != link.url:
			l.fail("GET redirect: %d Location %q %s (X-Request-ID %s)", r.Status, r.Header.Get("Location"), r.Body, r.Header.Get("X-Request-ID"))
		default:
			l.redirects.Add(1)
		}
	}
}

// Rolling restart behind nginx: three instances sharing PostgreSQL, each
// stopped with SIGTERM (exit 0) and started again on its port, five rounds,
// under steady load. No request may fail, and every 201 must still resolve.
func TestEdgeRollingRestart(t *testing.T) {
	c := startEdgeCluster(t, 3)
	ng := c.nginx
	seedClient := edgeClient("127.0.0.5")
	load := &edgeLoad{url: ng.URL}
	for i := 0; i < 200; i++ {
		target := fmt.Sprintf("https://example.com/seed/%d", i)
		r := edgeMustDo(t, seedClient, "POST", ng.URL+"/api/v1/links", []byte(`{"url":"`+target+`"}`), jsonCT)
		if r.Status != 201 {
			t.Fatalf("seed %d: %d %s", i, r.Status, r.Body)
		}
		load.seeds = append(load.seeds, edgeLink{r.json(t)["code"].(string), target})
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stopLoad := func() { cancel(); wg.Wait() }
	t.Cleanup(stopLoad)
	start := time.Now()
	for w := 0; w < edgeLoadWorkers; w++ {
		wg.Add(1)
		go func() { defer wg.Done(); load.run(ctx, w) }()
	}
	waitRequests := func(n int64) {
		t.Helper()
		testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%d more requests", n), func() bool { return load.requests.Load() >= n })
	}
	waitRequests(500) // warmed up

	for round := 0; round < 5; round++ {
		s := c.apps[round%len(c.apps)]
		roundStart := time.Now()
		sent := edgeSignal(t, s)
		exit := edgeWaitExit(t, s, sent, 15*time.Second) // delay 5 s + drain timeout 5 s, with room
		// What the drain found: requests running, and connections open
		// (those running them; nginx's idle ones are closed by then).
		drained := "no drain log line"
		if l := edgeAppLogLine(t, s, "shutdown delay over; draining"); l != nil {
			drained = fmt.Sprintf("drain began with %v open connections, %v running requests", l["open_connections"], l["running"])
		}
		s.restart()
		testenv.WaitFor(t, 10*time.Second, "restarted instance ready", func() bool {
			r, err := edgeDo(seedClient, "GET", s.URL+"/ready", nil)
			return err == nil && r.Status == 200
		})
		// Back in rotation: nginx sends it traffic again (after its 2 s
		// fail_timeout at most).
		testenv.WaitFor(t, 10*time.Second, "nginx to route to the restarted instance", func() bool {
			for _, l := range edgeAppLog(t, s) {
				if p, _ := l["path"].(string); l["msg"] == "request" && p != "/ready" && p != "/live" {
					return true
				}
			}
			return false
		})
		// The readiness polls' keep-alive connection is not nginx's; drop it,
		// so what a later drain finds open is nginx's alone.
		seedClient.CloseIdleConnections()
		t.Logf("round %d: instance %d sent SIGTERM at %s, exited %v after (%s), back in rotation after %v; %d requests so far, %d failures",
			round+1, round%len(c.apps)+1, sent.Format("15:04:05.000"), exit.Round(time.Millisecond), drained, time.Since(roundStart).Round(time.Millisecond),
			load.requests.Load(), load.failures.Load())
	}
	waitRequests(load.requests.Load() + 500) // steady after the last round
	stopLoad()
	elapsed := time.Since(start)

	total := load.requests.Load()
	rate := float64(total) / elapsed.Seconds()
	t.Logf("rolling restart: %d requests (%d redirects, %d creates) in %v = %.0f req/s, %d failures",
		total, load.redirects.Load(), len(load.created), elapsed.Round(time.Millisecond), rate, load.failures.Load())
	// How nginx hid the restarts: requests it passed to a second instance.
	retried := 0
	for _, l := range ng.accessLog(t) {
		if strings.Contains(fmt.Sprint(l["upstream_addr"]), ",") {
			retried++
		}
	}
	t.Logf("nginx retried %d requests on another instance", retried)
	if n := load.failures.Load(); n > 0 {
		// Refused connections are expected while an instance is down (nginx
		// moves those requests on); the rest of the error log says why a
		// request failed.
		var errs []string
		for _, l := range strings.Split(ng.errorLog(), "\n") {
			if !strings.Contains(l, "(111: Connection refused)") && !strings.Contains(l, "temporarily disabled") {
				errs = append(errs, l)
			}
		}
		t.Errorf("%d failed requests during the rolling restart; first ones:\n%s\nnginx error log, refusals left out:\n%s",
			n, strings.Join(load.failList, "\n"), strings.Join(errs, "\n"))
	}
	if rate < 500 {
		t.Errorf("load was %.0f req/s, want >= 500", rate)
	}

	// Every 201 still resolves (asked of the instances directly: nginx would
	// rate-limit this many requests from one address).
	for i, l := range load.created {
		r := edgeMustDo(t, seedClient, "GET", c.apps[i%len(c.apps)].URL+"/"+l.code, nil)
		if r.Status != 302 || r.Header.Get("Location") != l.url {
			t.Fatalf("created link %s no longer resolves: %d %q", l.code, r.Status, r.Header.Get("Location"))
		}
	}
	if len(load.created) == 0 {
		t.Fatal("no link was created under load")
	}
}
