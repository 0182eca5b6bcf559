package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestEdgeNginxConfigSubstitution checks the substitution contract of
// deploy/nginx/nginx.conf: only marked lines change, and a config whose
// markers drifted is refused.
func TestEdgeNginxConfigSubstitution(t *testing.T) {
	conf := strings.Join([]string{
		"pid /var/run/nginx.pid; # e2e:path",
		"server app1:8080 max_fails=2; # e2e:upstream",
		"server app2:8080 max_fails=2; # e2e:upstream",
		"listen 80; # e2e:listen",
		"listen 8081; # e2e:status-listen",
		"keepalive 64;",
	}, "\n") + "\n" + strings.Repeat("x /var/cache/nginx/t; # e2e:path\n", 5)
	out, err := edgeRenderConfig(conf, 1000, 1001, []string{"127.0.0.1:7", "127.0.0.1:8", "127.0.0.1:9"}, "/tmp/d")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pid /tmp/d/nginx.pid;",
		"server 127.0.0.1:7 max_fails=2;", "server 127.0.0.1:8 max_fails=2;", "server 127.0.0.1:9 max_fails=2;",
		"listen 127.0.0.1:1000;", "listen 127.0.0.1:1001;", "keepalive 64;", "x /tmp/d/t;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "app2") {
		t.Errorf("second upstream line kept:\n%s", out)
	}
	drifted := strings.Replace(conf, "listen 80; # e2e:listen", "listen 80;", 1)
	if _, err := edgeRenderConfig(drifted, 1000, 1001, nil, "/tmp/d"); err == nil {
		t.Error("config without a listen marker accepted")
	}
	unmarked := conf + "error_log /var/log/nginx/error.log;\n"
	if _, err := edgeRenderConfig(unmarked, 1000, 1001, nil, "/tmp/d"); err == nil {
		t.Error("config with an unmarked /var/ path accepted")
	}
}

// Through nginx: create, redirect and API read work; forged client-address
// headers are overwritten; request IDs pass through or are made by nginx;
// bodies over 16 KiB get 413 problems from nginx and from linkgate; /metrics
// is not reachable; stub_status answers on its own listener only.
func TestEdgeNginxProxy(t *testing.T) {
	c := startEdgeCluster(t, 2)
	ng, apps := c.nginx, c.apps
	cl := edgeClient("127.0.0.1")

	t.Run("create redirect read", func(t *testing.T) {
		r := edgeMustDo(t, cl, "POST", ng.URL+"/api/v1/links", []byte(`{"url":"https://example.com/edge/basic"}`), jsonCT)
		if r.Status != 201 {
			t.Fatalf("create through nginx: %d %s", r.Status, r.Body)
		}
		code := r.json(t)["code"].(string)
		// Several reads, so both instances (and their empty caches) serve it.
		for i := 0; i < 6; i++ {
			r = edgeMustDo(t, cl, "GET", ng.URL+"/"+code, nil)
			if r.Status != 302 || r.Header.Get("Location") != "https://example.com/edge/basic" {
				t.Fatalf("redirect %d through nginx: %d %q", i, r.Status, r.Header.Get("Location"))
			}
			if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age") {
				t.Fatalf("redirect lost Cache-Control: %q", cc)
			}
			r = edgeMustDo(t, cl, "GET", ng.URL+"/api/v1/links/"+code, nil)
			if r.Status != 200 || r.json(t)["url"] != "https://example.com/edge/basic" {
				t.Fatalf("API read through nginx: %d %s", r.Status, r.Body)
			}
		}
		r = edgeMustDo(t, cl, "HEAD", ng.URL+"/"+code, nil)
		if r.Status != 302 {
			t.Fatalf("HEAD through nginx: %d", r.Status)
		}
		served := map[string]bool{}
		testenv.Eventually(3*time.Second, func() bool { // nginx logs after responding
			for _, l := range ng.accessLog(t) {
				if strings.HasSuffix(fmt.Sprint(l["uri"]), "/"+code) {
					served[fmt.Sprint(l["upstream_addr"])] = true
				}
			}
			return len(served) == 2
		})
		if len(served) != 2 {
			t.Fatalf("requests for the link served by %v, want both instances", served)
		}
	})

	t.Run("forged client address", func(t *testing.T) {
		forged := []string{"X-Forwarded-For: 203.0.113.9, 10.0.0.1", "X-Real-IP: 198.51.100.7"}
		for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
			id := fmt.Sprintf("edge-forged-%s-%d", strings.ReplaceAll(src, ".", "-"), time.Now().UnixNano())
			r := edgeMustDo(t, edgeClient(src), "GET", ng.URL+"/api/v1/links/nosuchcode", nil,
				append([]string{"X-Request-ID: " + id}, forged...)...)
			if r.Status != 404 || r.Header.Get("X-Request-ID") != id {
				t.Fatalf("through nginx: %d, X-Request-ID %q (want %q)", r.Status, r.Header.Get("X-Request-ID"), id)
			}
			if ip := edgeFindRequest(t, id, apps...)["ip"]; ip != src {
				t.Fatalf("linkgate saw client %v through nginx, want %s (forged headers must be overwritten)", ip, src)
			}
			line := ng.logLine(t, id)
			if line == nil || line["remote_addr"] != src || line["upstream_addr"] == "" || line["status"] != float64(404) {
				t.Fatalf("nginx access log line for %s: %v", id, line)
			}
		}
		// Control: the same headers sent straight to linkgate from a trusted
		// address are believed, so the check above depends on nginx.
		id := fmt.Sprintf("edge-forged-direct-%d", time.Now().UnixNano())
		edgeMustDo(t, cl, "GET", apps[0].URL+"/api/v1/links/nosuchcode", nil, append([]string{"X-Request-ID: " + id}, forged...)...)
		if ip := edgeFindRequest(t, id, apps[0])["ip"]; ip != "198.51.100.7" {
			t.Fatalf("control: linkgate saw %v for a direct request from a trusted peer, want the X-Real-IP value", ip)
		}
	})

	t.Run("request id made by nginx", func(t *testing.T) {
		for _, hdr := range [][]string{nil, {"X-Request-ID: bad id <script>"}} {
			r := edgeMustDo(t, cl, "GET", ng.URL+"/live", nil, hdr...)
			id := r.Header.Get("X-Request-ID")
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
				t.Fatalf("X-Request-ID %q, want nginx's $request_id (32 hex digits)", id)
			}
			edgeFindRequest(t, id, apps...) // linkgate logged nginx's ID
			if ng.logLine(t, id) == nil {
				t.Fatalf("nginx did not log request ID %s", id)
			}
		}
	})

	t.Run("body over 16 KiB", func(t *testing.T) {
		big := []byte(`{"url":"https://example.com/` + strings.Repeat("a", 17*1024) + `"}`)
		before := apps[0].snapshot(t)
		r := edgeMustDo(t, cl, "POST", ng.URL+"/api/v1/links", big, jsonCT)
		p := edgeProblem(t, r, 413)
		if p["type"] != "urn:linkgate:problem:body-too-large" || r.Header.Get("X-Request-ID") == "" {
			t.Fatalf("nginx 413: %s, X-Request-ID %q", r.Body, r.Header.Get("X-Request-ID"))
		}
		for _, s := range apps {
			r = edgeMustDo(t, cl, "POST", s.URL+"/api/v1/links", big, jsonCT)
			edgeProblem(t, r, 413)
		}
		if after := apps[0].snapshot(t); !equalMaps(before, after) {
			t.Fatal("a refused body changed stored links")
		}
		// Just under the limit still reaches linkgate (which refuses the URL
		// as too long, as a 4xx problem, not the body).
		fits := []byte(`{"url":"https://example.com/` + strings.Repeat("a", 15*1024) + `"}`)
		r = edgeMustDo(t, cl, "POST", ng.URL+"/api/v1/links", fits, jsonCT)
		if r.Status == 413 || r.Status < 400 || r.Status > 499 {
			t.Fatalf("15 KiB body through nginx: %d %s", r.Status, r.Body)
		}
	})

	t.Run("metrics and stub_status", func(t *testing.T) {
		for _, p := range []string{"/metrics", "/metrics/", "/metrics?x=1", "//metrics", "/%6Detrics"} {
			r := edgeMustDo(t, cl, "GET", ng.URL+p, nil)
			if r.Status != 404 || strings.Contains(string(r.Body), "# HELP") {
				t.Fatalf("GET %s through nginx: %d %.200s", p, r.Status, r.Body)
			}
		}
		var metricsLines []map[string]any
		testenv.Eventually(3*time.Second, func() bool { // nginx logs after responding
			metricsLines = metricsLines[:0]
			for _, l := range ng.accessLog(t) {
				if strings.Contains(fmt.Sprint(l["uri"]), "etrics") {
					metricsLines = append(metricsLines, l)
				}
			}
			return len(metricsLines) == 5
		})
		if len(metricsLines) != 5 {
			t.Fatalf("nginx logged %d of the 5 /metrics requests", len(metricsLines))
		}
		for _, l := range metricsLines {
			if l["upstream_addr"] != "" {
				t.Fatalf("a /metrics request reached linkgate: %v", l)
			}
		}
		r := edgeMustDo(t, cl, "GET", ng.StatusURL+"/stub_status", nil)
		if r.Status != 200 || !strings.Contains(string(r.Body), "Active connections:") {
			t.Fatalf("stub_status: %d %s", r.Status, r.Body)
		}
		if r := edgeMustDo(t, cl, "GET", ng.URL+"/stub_status", nil); strings.Contains(string(r.Body), "Active connections:") {
			t.Fatal("stub_status reachable on the public listener")
		}
	})

	t.Run("gzip keeps validators usable", func(t *testing.T) {
		long := "https://example.com/gz/" + strings.Repeat("p", 1500)
		r := edgeMustDo(t, cl, "POST", ng.URL+"/api/v1/links", []byte(`{"url":"`+long+`"}`), jsonCT)
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		code := r.json(t)["code"].(string)
		// A single link: not compressed, so its strong ETag works in If-Match.
		r = edgeMustDo(t, cl, "GET", ng.URL+"/api/v1/links/"+code, nil, "Accept-Encoding: gzip")
		etag := r.Header.Get("ETag")
		if r.Status != 200 || r.Header.Get("Content-Encoding") != "" || etag == "" || strings.HasPrefix(etag, "W/") {
			t.Fatalf("single link through nginx: %d, Content-Encoding %q, ETag %q", r.Status, r.Header.Get("Content-Encoding"), etag)
		}
		// The list is large JSON: compressed (ETag weakened by nginx), and a
		// conditional GET with that weak tag still gets 304.
		r = edgeMustDo(t, cl, "GET", ng.URL+"/api/v1/links?limit=100", nil, "Accept-Encoding: gzip", adminAuth)
		if r.Status != 200 || r.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(r.Header.Get("Vary"), "Accept-Encoding") {
			t.Fatalf("list through nginx: %d, Content-Encoding %q, Vary %q", r.Status, r.Header.Get("Content-Encoding"), r.Header.Get("Vary"))
		}
		// The list changes while click counts are flushed; retry until two
		// reads see the same representation.
		listTag := r.Header.Get("ETag")
		if !strings.HasPrefix(listTag, "W/") {
			t.Fatalf("gzipped list ETag %q, want nginx's weakened form", listTag)
		}
		var last response
		if !testenv.Eventually(5*time.Second, func() bool {
			last = edgeMustDo(t, cl, "GET", ng.URL+"/api/v1/links?limit=100", nil, "Accept-Encoding: gzip", adminAuth, "If-None-Match: "+listTag)
			if last.Status == 200 && last.Header.Get("ETag") != listTag {
				listTag = last.Header.Get("ETag") // content changed meanwhile
				return false
			}
			return true
		}) || last.Status != 304 {
			t.Fatalf("If-None-Match %s (weakened by gzip) through nginx: %d ETag %q, want 304", listTag, last.Status, last.Header.Get("ETag"))
		}
		r = edgeMustDo(t, cl, "DELETE", ng.URL+"/api/v1/links/"+code, nil, adminAuth, "If-Match: "+etag)
		if r.Status != 204 {
			t.Fatalf("DELETE with If-Match %s through nginx: %d %s", etag, r.Status, r.Body)
		}
	})
}

// nginx's own per-IP flood guard answers 429 with a problem body and
// Retry-After (never 503), after letting a generous burst through.
func TestEdgeNginxFloodGuard(t *testing.T) {
	app := startServer(t, "sqlite://"+t.TempDir()+"/flood.db", edgeEnv...)
	ng := startEdgeNginx(t, fmt.Sprintf("127.0.0.1:%d", app.port))

	cl := edgeClient("127.0.0.3")
	var ok, limited, other atomic.Int64
	var sample atomic.Value
	stop := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := edgeDo(cl, "GET", ng.URL+"/live", nil)
				switch {
				case err != nil:
					other.Add(1)
				case r.Status == 200:
					ok.Add(1)
				case r.Status == 429:
					limited.Add(1)
					sample.CompareAndSwap(nil, r)
					once.Do(func() { close(stop) })
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if limited.Load() == 0 || other.Load() != 0 {
		t.Fatalf("flood: %d ok, %d limited, %d other; want some 429 and nothing else", ok.Load(), limited.Load(), other.Load())
	}
	if ok.Load() < 200 {
		t.Fatalf("only %d requests passed before the limit; the burst (200) should pass", ok.Load())
	}
	r := sample.Load().(response)
	p := edgeProblem(t, r, 429)
	if p["type"] != "urn:linkgate:problem:quota-exceeded" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("nginx 429: %s, Retry-After %q", r.Body, r.Header.Get("Retry-After"))
	}
	// Another client address is not limited.
	if r := edgeMustDo(t, edgeClient("127.0.0.4"), "GET", ng.URL+"/live", nil); r.Status != 200 {
		t.Fatalf("other client after the flood: %d", r.Status)
	}
	t.Logf("flood guard: %d passed, %d limited with 429", ok.Load(), limited.Load())
}

// With no instance answering, nginx's 502 is a problem body too.
func TestEdgeNginxBadGateway(t *testing.T) {
	ng := startEdgeNginx(t, fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	r := edgeMustDo(t, edgeClient("127.0.0.1"), "GET", ng.URL+"/abcdefg", nil)
	p := edgeProblem(t, r, 502)
	if p["type"] != "urn:linkgate:problem:bad-gateway" {
		t.Fatalf("nginx 502: %s", r.Body)
	}
	var body map[string]any
	_ = json.Unmarshal(r.Body, &body)
	if body["request_id"] != r.Header.Get("X-Request-ID") || r.Header.Get("X-Request-ID") == "" {
		t.Fatalf("502 request ID: body %v, header %q", body["request_id"], r.Header.Get("X-Request-ID"))
	}
}
