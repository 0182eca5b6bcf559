package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// A 201 means durable: the link survives SIGKILL right after it, on both
// stores, 20 rounds each.
func TestDurabilityAcrossSIGKILL(t *testing.T) {
	for name, newDB := range storeURLs(t) {
		t.Run(name, func(t *testing.T) {
			db := newDB(t)
			s := startServer(t, db)
			var codes []string
			for round := 0; round < 20; round++ {
				l := s.create(t, fmt.Sprintf(`{"url":"https://example.com/durable/%d"}`, round))
				codes = append(codes, l["code"].(string))
				s.kill() // SIGKILL immediately after the 201
				s.restart()
				for i, code := range codes {
					r := do(t, "GET", s.URL+"/"+code, nil)
					want := fmt.Sprintf("https://example.com/durable/%d", i)
					if r.Status != 302 || r.Header.Get("Location") != want {
						t.Fatalf("round %d: link %d (%s) lost after SIGKILL: %d %q", round, i, code, r.Status, r.Header.Get("Location"))
					}
				}
			}
		})
	}
}

// 200 concurrent creates of one alias: exactly one 201 and 199 409s.
func TestAliasRace(t *testing.T) {
	for name, newDB := range storeURLs(t) {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, newDB(t))
			const n = 200
			statuses := make([]int, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					<-start
					req, _ := http.NewRequest("POST", s.URL+"/api/v1/links",
						strings.NewReader(fmt.Sprintf(`{"url":"https://example.com/race/%d","code":"race-alias"}`, i)))
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						t.Errorf("request %d: %v", i, err)
						return
					}
					resp.Body.Close()
					statuses[i] = resp.StatusCode
				}(i)
			}
			close(start)
			wg.Wait()
			count := map[int]int{}
			for _, st := range statuses {
				count[st]++
			}
			if count[201] != 1 || count[409] != n-1 {
				t.Fatalf("statuses %v, want exactly 1×201 and %d×409", count, n-1)
			}
		})
	}
}

// The seed's checkpoint flow, exactly as its README wrote it.
func TestSeedCheckpoint(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/seed.db", "LINKGATE_BASE_URL=http://localhost:8080")
	curl := testenv.Tool(t, "curl", "curl")
	out, err := exec.Command(curl, "-sS", "-w", "\n%{http_code}", "-X", "POST", s.URL+"/encurtar",
		"-H", "Content-Type: application/json", "-d", `{"url_longa":"https://www.google.com"}`).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	body, status, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if status != "201" {
		t.Fatalf("POST /encurtar: status %s body %s", status, body)
	}
	var got struct {
		URLLonga string `json:"url_longa"`
		URLCurta string `json:"url_curta"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.URLLonga != "https://www.google.com" ||
		!strings.HasPrefix(got.URLCurta, "http://localhost:8080/") {
		t.Fatalf("body %s (err %v), want url_longa and url_curta under the base URL", body, err)
	}
	// Follow url_curta on the test port.
	r := do(t, "GET", s.URL+strings.TrimPrefix(got.URLCurta, "http://localhost:8080"), nil)
	if r.Status != 302 || r.Header.Get("Location") != "https://www.google.com" {
		t.Fatalf("following url_curta: %d Location %q, want 302 to Google", r.Status, r.Header.Get("Location"))
	}
	// The seed listing shows it.
	r = do(t, "GET", s.URL+"/api/links", nil, adminAuth)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"https://www.google.com"`) {
		t.Fatalf("GET /api/links: %d %s", r.Status, r.Body)
	}
}

// 1000 redirects then SIGTERM: the store holds exactly 1000 clicks. The flush
// interval is an hour, so only the shutdown flush can have written them.
func TestClicksFlushedAtShutdown(t *testing.T) {
	for name, newDB := range storeURLs(t) {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, newDB(t), "LINKGATE_CLICK_FLUSH_INTERVAL=1h")
			code := s.create(t, `{"url":"https://example.com/clicks"}`)["code"].(string)
			var wg sync.WaitGroup
			for w := 0; w < 10; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 100; i++ {
						if r := do(t, "GET", s.URL+"/"+code, nil); r.Status != 302 {
							t.Errorf("redirect: %d", r.Status)
						}
					}
				}()
			}
			wg.Wait()
			// HEAD is not a click.
			if r := do(t, "HEAD", s.URL+"/"+code, nil); r.Status != 302 {
				t.Fatalf("HEAD: %d", r.Status)
			}
			s.term(30 * time.Second)
			s.restart()
			got := do(t, "GET", s.URL+"/api/v1/links/"+code, nil).json(t)["clicks"]
			if got != float64(1000) {
				t.Fatalf("stored clicks = %v, want exactly 1000", got)
			}
		})
	}
}

func TestHelpAndBadSettings(t *testing.T) {
	out, err := exec.Command(binary, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("linkgate -h: %v", err)
	}
	for _, v := range []string{"LINKGATE_ADDR", "LINKGATE_DATABASE_URL", "LINKGATE_REDIS_URL", "LINKGATE_RATELIMIT_CREATE",
		"LINKGATE_DRAIN_TIMEOUT", "LINKGATE_PUBLIC_CREATE", "LINKGATE_LOG_LEVEL"} {
		if !strings.Contains(string(out), v) {
			t.Errorf("linkgate -h does not list %s", v)
		}
	}
	cmd := exec.Command(binary)
	cmd.Env = []string{"LINKGATE_REDIRECT_MAX_AGE=soon"}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "LINKGATE_REDIRECT_MAX_AGE") {
		t.Fatalf("bad setting: err %v output %q, want a failure naming the variable", err, out)
	}
}

func TestKeysCreate(t *testing.T) {
	db := "sqlite://" + t.TempDir() + "/keys.db"
	cmd := exec.Command(binary, "keys", "create", "--name", "ci", "--admin=false")
	cmd.Env = []string{"LINKGATE_DATABASE_URL=" + db}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("keys create: %v", err)
	}
	key := strings.TrimSpace(string(out))
	s := startServer(t, db, "LINKGATE_PUBLIC_CREATE=false")
	if r := do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/k"}`), jsonCT); r.Status != 401 {
		t.Fatalf("anonymous create with public create off: %d", r.Status)
	}
	if r := do(t, "POST", s.URL+"/api/v1/links", []byte(`{"url":"https://example.com/k"}`), jsonCT, "Authorization: Bearer "+key); r.Status != 201 {
		t.Fatalf("create with the new key: %d %s", r.Status, r.Body)
	}
	if r := do(t, "GET", s.URL+"/api/v1/links", nil, "Authorization: Bearer "+key); r.Status != 403 {
		t.Fatalf("list with a non-admin key: %d, want 403", r.Status)
	}
	if r := do(t, "GET", s.URL+"/api/v1/links", nil, "Authorization: Bearer "+key+"x"); r.Status != 401 {
		t.Fatalf("list with a wrong key: %d, want 401", r.Status)
	}
}

func TestProbeSubcommand(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/probe.db")
	if out, err := exec.Command(binary, "probe", s.URL+"/ready").CombinedOutput(); err != nil {
		t.Fatalf("probe /ready of a ready server: %v %s", err, out)
	}
	if err := exec.Command(binary, "probe", s.URL+"/nosuchcode").Run(); err == nil {
		t.Fatal("probe of a 404 succeeded")
	}
	s.kill()
	if err := exec.Command(binary, "probe", s.URL+"/ready").Run(); err == nil {
		t.Fatal("probe of a dead server succeeded")
	}
}

// A valid X-Request-ID is echoed; an invalid one is replaced.
func TestRequestID(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/rid.db")
	if r := do(t, "GET", s.URL+"/nosuch", nil, "X-Request-ID: abc-123.x"); r.Header.Get("X-Request-ID") != "abc-123.x" {
		t.Fatalf("valid request ID not echoed: %q", r.Header.Get("X-Request-ID"))
	}
	r := do(t, "GET", s.URL+"/nosuch", nil, "X-Request-ID: bad id <script>")
	if got := r.Header.Get("X-Request-ID"); got == "" || strings.ContainsAny(got, " <>") {
		t.Fatalf("invalid request ID not replaced: %q", got)
	}
}
