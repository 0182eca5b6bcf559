package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// rlForged returns headers claiming a random client address in every form a
// naive limiter might believe.
func rlForged() []string {
	ip := rlRandomIP()
	return []string{
		"X-Forwarded-For: " + ip + ", " + rlRandomIP(),
		"X-Real-IP: " + rlRandomIP(),
		"Forwarded: for=" + ip,
		"True-Client-IP: " + ip,
		"CF-Connecting-IP: " + ip,
	}
}

// Issue 4, item 6, directly: with no trusted proxies, 1,000 concurrent
// requests from one client, each forging a different client address, all
// land in the bucket of the socket address: at api 100/1h:100 exactly 100
// are answered and 900 limited, and Redis holds that one bucket only.
func TestRateLimitSpoofedHeadersDirect(t *testing.T) {
	r, rdb := rlRedis(t)
	s := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "rl.db"),
		append([]string{"LINKGATE_REDIS_URL=" + r.URL(), testRedisTimeout}, rlPolicies("off", "off", "100/1h:100")...)...)
	code := s.create(t, `{"url":"https://example.com/spoof"}`)["code"].(string)

	counts := rlCount(t, 1000, 8, func(int) (response, error) {
		return edgeDo(client, "GET", s.URL+"/api/v1/links/"+code, nil, rlForged()...)
	})
	if counts[http.StatusOK] != 100 || counts[http.StatusTooManyRequests] != 900 {
		t.Fatalf("1000 forged requests: statuses %v, want 100×200 and 900×429", counts)
	}
	if keys := rlBucketKeys(t, rdb); len(keys) != 1 || keys[0] != "lg:rl:{api:ip:127.0.0.1}" {
		t.Fatalf("bucket keys %q, want only lg:rl:{api:ip:127.0.0.1}", keys)
	}
}

// Issue 4, item 6, behind a trusted proxy: with LINKGATE_TRUSTED_PROXIES=
// 127.0.0.1/32, X-Real-IP from 127.0.0.1 names the client, so ten distinct
// clients (IPv4 and IPv6) each get their own bucket: 20 requests each at api
// 10/1h:10 give exactly 10 answers and 10 denials per client. A peer that is
// not trusted (127.0.0.2) sending the same header is still limited by its
// socket address, whatever X-Real-IP it claims.
func TestRateLimitTrustedProxyRealIP(t *testing.T) {
	r, rdb := rlRedis(t)
	s := startServer(t, "sqlite://"+filepath.Join(t.TempDir(), "rl.db"),
		append([]string{"LINKGATE_REDIS_URL=" + r.URL(), testRedisTimeout, "LINKGATE_TRUSTED_PROXIES=127.0.0.1/32"},
			rlPolicies("off", "off", "10/1h:10")...)...)
	code := s.create(t, `{"url":"https://example.com/trusted"}`)["code"].(string)

	clients := []string{"2001:db8::7"}
	for i := 1; i < 10; i++ {
		clients = append(clients, fmt.Sprintf("203.0.113.%d", 10*i))
	}
	const per = 20
	proxy := edgeClient("127.0.0.1")
	perClient := make([]map[int]int, len(clients))
	for ci, ip := range clients {
		perClient[ci] = rlCount(t, per, 4, func(int) (response, error) {
			return edgeDo(proxy, "GET", s.URL+"/api/v1/links/"+code, nil, "X-Real-IP: "+ip, "X-Forwarded-For: "+rlRandomIP())
		})
	}
	for ci, ip := range clients {
		if c := perClient[ci]; c[http.StatusOK] != 10 || c[http.StatusTooManyRequests] != 10 {
			t.Errorf("client %s: statuses %v, want 10×200 and 10×429", ip, c)
		}
	}
	peer := edgeClient("127.0.0.2")
	untrusted := rlCount(t, per, 4, func(int) (response, error) {
		return edgeDo(peer, "GET", s.URL+"/api/v1/links/"+code, nil, "X-Real-IP: "+rlRandomIP())
	})
	if untrusted[http.StatusOK] != 10 || untrusted[http.StatusTooManyRequests] != 10 {
		t.Errorf("untrusted peer 127.0.0.2 with forged X-Real-IP: statuses %v, want 10×200 and 10×429", untrusted)
	}

	want := map[string]bool{"lg:rl:{api:ip:127.0.0.2}": true}
	for _, ip := range clients {
		want["lg:rl:{api:ip:"+ip+"}"] = true
	}
	keys := rlBucketKeys(t, rdb)
	for _, k := range keys {
		if !want[k] {
			t.Errorf("unexpected bucket %q", k)
		}
	}
	if len(keys) != len(want) {
		t.Fatalf("%d bucket keys %q, want the %d clients' own", len(keys), keys, len(want))
	}
}

// Issue 4, item 6, through the shipped nginx in front of two instances
// sharing Redis: nginx overwrites X-Real-IP and X-Forwarded-For with the
// socket peer, so a client forging them from 127.0.0.3 is one bucket
// (ip:127.0.0.3), shared by both instances: at api 20/1h:20, 20 of 60
// requests are answered and 40 get linkgate's 429 (not nginx's flood guard:
// they carry the api fields). A second client, 127.0.0.4, has its own bucket.
func TestRateLimitForgedHeadersThroughNginx(t *testing.T) {
	r, rdb := rlRedis(t)
	c := startEdgeCluster(t, 2, append([]string{"LINKGATE_REDIS_URL=" + r.URL(), testRedisTimeout}, rlPolicies("off", "off", "20/1h:20")...)...)
	created := edgeMustDo(t, edgeClient("127.0.0.1"), "POST", c.nginx.URL+"/api/v1/links",
		[]byte(`{"url":"https://example.com/edge"}`), jsonCT, adminAuth)
	if created.Status != http.StatusCreated {
		t.Fatalf("create through nginx: %d %s", created.Status, created.Body)
	}
	code := created.json(t)["code"].(string)

	forger := edgeClient("127.0.0.3")
	counts := rlCount(t, 60, 4, func(int) (response, error) {
		return edgeDo(forger, "GET", c.nginx.URL+"/api/v1/links/"+code, nil, rlForged()...)
	})
	if counts[http.StatusOK] != 20 || counts[http.StatusTooManyRequests] != 40 {
		t.Fatalf("60 forged requests through nginx: statuses %v, want 20×200 and 40×429", counts)
	}
	// One more, checked in full: linkgate's denial, relayed by nginx.
	rl429(t, edgeMustDo(t, forger, "GET", c.nginx.URL+"/api/v1/links/"+code, nil, rlForged()...), "api")

	second := edgeClient("127.0.0.4")
	other := rlCount(t, 5, 1, func(int) (response, error) {
		return edgeDo(second, "GET", c.nginx.URL+"/api/v1/links/"+code, nil, "X-Real-IP: 127.0.0.3")
	})
	if other[http.StatusOK] != 5 {
		t.Fatalf("second client 127.0.0.4: statuses %v, want 5×200 (its own bucket)", other)
	}
	keys := rlBucketKeys(t, rdb)
	// The admin create from 127.0.0.1 was the admin key's first use, whose
	// read is charged to that address's keylookup bucket.
	want := "lg:rl:{api:ip:127.0.0.3} lg:rl:{api:ip:127.0.0.4} lg:rl:{keylookup:net:127.0.0.1}"
	if strings.Join(keys, " ") != want {
		t.Fatalf("bucket keys %q, want %s", keys, want)
	}
	// Both instances decided (nginx spreads the load), from the one bucket:
	// 25 answers and 41 denials in all.
	var allowed, limited float64
	for i, app := range c.apps {
		m := scrape(t, app)
		a, l := m[rlDecisions("api", "allowed")], m[rlDecisions("api", "limited")]
		t.Logf("instance %d: %v api decisions allowed, %v limited", i, a, l)
		if a+l == 0 {
			t.Errorf("instance %d made no api decision: the test did not exercise a shared bucket", i)
		}
		allowed, limited = allowed+a, limited+l
	}
	if allowed != 25 || limited != 41 {
		t.Fatalf("api decisions over both instances: %v allowed, %v limited; want 25 and 41", allowed, limited)
	}
}
