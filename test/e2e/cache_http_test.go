package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// Issue 3, item 6: conditional requests on GET /api/v1/links/{code} and
// DELETE, RFC 9110 section 13, against the running server. The representation
// changes only when a click the test makes is flushed (every 100 ms here).
func TestCacheConditionalRequests(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/cond.db", cacheEnv("LINKGATE_CLICK_FLUSH_INTERVAL=100ms")...)
	code := cacheAlias("cond-")
	s.create(t, fmt.Sprintf(`{"url":"https://example.com/cond","code":%q}`, code))
	meta := s.URL + "/api/v1/links/" + code

	base := do(t, "GET", meta, nil)
	etag, lastMod := base.Header.Get("ETag"), base.Header.Get("Last-Modified")
	if base.Status != 200 || len(base.Body) == 0 {
		t.Fatalf("GET metadata: %d %s", base.Status, base.Body)
	}
	if len(etag) < 3 || strings.HasPrefix(etag, "W/") || etag[0] != '"' || etag[len(etag)-1] != '"' {
		t.Fatalf("ETag %q, want a strong quoted entity tag", etag)
	}
	lm, err := http.ParseTime(lastMod)
	if err != nil {
		t.Fatalf("Last-Modified %q: %v", lastMod, err)
	}
	if got := base.Header.Get("Cache-Control"); got != "no-cache" {
		t.Fatalf("anonymous GET Cache-Control %q, want no-cache", got)
	}
	if !cacheVaryHas(base.Header, "Authorization") {
		t.Fatalf("Vary %q, want Authorization", base.Header.Values("Vary"))
	}
	if again := do(t, "GET", meta, nil); again.Header.Get("ETag") != etag {
		t.Fatalf("ETag not stable: %q then %q", etag, again.Header.Get("ETag"))
	}

	httpDate := func(tm time.Time) string { return tm.UTC().Format(http.TimeFormat) }
	cases := []struct {
		name    string
		method  string
		headers []string
		want    int
	}{
		{"If-None-Match current", "GET", []string{"If-None-Match: " + etag}, 304},
		{"If-None-Match other", "GET", []string{`If-None-Match: "other"`}, 200},
		{"If-None-Match list with current", "GET", []string{`If-None-Match: "a", ` + etag + `, "b"`}, 304},
		{"If-None-Match list without current", "GET", []string{`If-None-Match: "a", "b"`}, 200},
		{"If-None-Match star", "GET", []string{"If-None-Match: *"}, 304},
		{"If-None-Match weak form of current", "GET", []string{"If-None-Match: W/" + etag}, 304},
		{"If-None-Match weak other", "GET", []string{`If-None-Match: W/"other"`}, 200},
		{"If-Modified-Since Last-Modified", "GET", []string{"If-Modified-Since: " + lastMod}, 304},
		{"If-Modified-Since earlier", "GET", []string{"If-Modified-Since: " + httpDate(lm.Add(-time.Second))}, 200},
		{"If-Modified-Since malformed", "GET", []string{"If-Modified-Since: yesterday"}, 200},
		{"If-Modified-Since ignored with non-matching If-None-Match", "GET",
			[]string{"If-Modified-Since: " + lastMod, `If-None-Match: "other"`}, 200},
		{"If-Modified-Since ignored with matching If-None-Match", "GET",
			[]string{"If-Modified-Since: " + httpDate(lm.Add(-time.Hour)), "If-None-Match: " + etag}, 304},
		{"If-Match current", "GET", []string{"If-Match: " + etag}, 200},
		{"If-Match other", "GET", []string{`If-Match: "other"`}, 412},
		{"If-Match weak form of current (strong comparison)", "GET", []string{"If-Match: W/" + etag}, 412},
		{"If-Unmodified-Since earlier", "GET", []string{"If-Unmodified-Since: " + httpDate(lm.Add(-time.Hour))}, 412},
		{"If-Unmodified-Since Last-Modified", "GET", []string{"If-Unmodified-Since: " + lastMod}, 200},
		{"HEAD", "HEAD", nil, 200},
		{"HEAD If-None-Match current", "HEAD", []string{"If-None-Match: " + etag}, 304},
		{"HEAD If-None-Match other", "HEAD", []string{`If-None-Match: "other"`}, 200},
		{"HEAD If-Modified-Since Last-Modified", "HEAD", []string{"If-Modified-Since: " + lastMod}, 304},
		{"authenticated If-None-Match current", "GET", []string{adminAuth, "If-None-Match: " + etag}, 304},
		{"authenticated", "GET", []string{adminAuth}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, meta, nil, tc.headers...)
			if r.Status != tc.want {
				t.Fatalf("%s with %q: %d, want %d (body %s)", tc.method, tc.headers, r.Status, tc.want, r.Body)
			}
			wantCC := "no-cache"
			if strings.Contains(strings.Join(tc.headers, "\n"), "Authorization:") {
				wantCC = "private, no-cache"
			}
			switch tc.want {
			case 200, 304:
				if got := r.Header.Get("ETag"); got != etag {
					t.Errorf("ETag %q, want the 200's %q", got, etag)
				}
				if got := r.Header.Get("Cache-Control"); got != wantCC {
					t.Errorf("Cache-Control %q, want %q", got, wantCC)
				}
				if !cacheVaryHas(r.Header, "Authorization") {
					t.Errorf("Vary %q, want Authorization", r.Header.Values("Vary"))
				}
			case 412:
				if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
					t.Errorf("412 Content-Type %q, want problem+json", ct)
				}
			}
			switch {
			case tc.want == 304 || tc.method == "HEAD":
				if len(r.Body) != 0 {
					t.Errorf("body %q, want none", r.Body)
				}
			case tc.want == 200 && string(r.Body) != string(base.Body):
				t.Errorf("body %s, want %s", r.Body, base.Body)
			}
		})
	}

	// Go's client never reads a 304's or a HEAD's body, so look at the wire:
	// nothing may follow the header block.
	for _, method := range []string{"GET", "HEAD"} {
		head, rest := cacheRawRequest(t, s, method, "/api/v1/links/"+code, "If-None-Match: "+etag)
		if !strings.HasPrefix(head, "HTTP/1.1 304") || rest != "" {
			t.Fatalf("raw conditional %s: %q then %d body bytes %q, want a bare 304", method, head, len(rest), rest)
		}
		if got := cacheRawHeader(head, "ETag"); got != etag {
			t.Fatalf("raw conditional %s: no ETag %s in %q", method, etag, head)
		}
	}

	// A redirect is a click, and flushed clicks are part of the
	// representation: once flushed, the old tag no longer matches.
	if r := do(t, "GET", s.URL+"/"+code, nil); r.Status != 302 {
		t.Fatalf("redirect: %d", r.Status)
	}
	var after response
	testenv.WaitFor(t, 5*time.Second, "the click to be flushed", func() bool {
		after = do(t, "GET", meta, nil, "If-None-Match: "+etag)
		return after.Status != http.StatusNotModified
	})
	newTag := after.Header.Get("ETag")
	if after.Status != 200 || newTag == etag || newTag == "" {
		t.Fatalf("after a click, If-None-Match with the old tag: %d ETag %q (old %q), want 200 and a new tag", after.Status, newTag, etag)
	}
	if clicks := after.json(t)["clicks"]; clicks != float64(1) {
		t.Fatalf("after one click the metadata says clicks=%v", clicks)
	}
	if r := do(t, "GET", meta, nil, "If-None-Match: "+newTag); r.Status != 304 {
		t.Fatalf("If-None-Match with the new tag: %d, want 304", r.Status)
	}
	// (HEAD is not a click: TestClicksFlushedAtShutdown counts exactly.)

	// DELETE honours If-Match with the strong comparison.
	for _, im := range []string{`"other"`, etag, "W/" + newTag} {
		r := do(t, "DELETE", meta, nil, adminAuth, "If-Match: "+im)
		if r.Status != http.StatusPreconditionFailed {
			t.Fatalf("DELETE with If-Match %s (current %s): %d %s, want 412", im, newTag, r.Status, r.Body)
		}
		if g := do(t, "GET", meta, nil); g.Status != 200 || g.Header.Get("ETag") != newTag {
			t.Fatalf("after the refused DELETE: metadata %d ETag %q, want the link unchanged", g.Status, g.Header.Get("ETag"))
		}
		if h := do(t, "HEAD", s.URL+"/"+code, nil); h.Status != 302 {
			t.Fatalf("after the refused DELETE the short link answers %d", h.Status)
		}
	}
	if r := do(t, "DELETE", meta, nil, adminAuth, `If-Match: "x", `+newTag); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE with a matching If-Match: %d %s, want 204", r.Status, r.Body)
	}
	if r := do(t, "GET", meta, nil); r.Status != 404 {
		t.Fatalf("metadata after delete: %d", r.Status)
	}
	if r := do(t, "GET", s.URL+"/"+code, nil); r.Status != 404 || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("short link after delete: %d Cache-Control %q, want 404 no-store", r.Status, r.Header.Get("Cache-Control"))
	}
	// No representation, no precondition to evaluate: 404, not 412.
	if r := do(t, "DELETE", meta, nil, adminAuth, "If-Match: "+newTag); r.Status != 404 {
		t.Fatalf("DELETE with If-Match of a deleted link: %d, want 404", r.Status)
	}
}

// The admin listing has an ETag that changes with its content.
func TestCacheListingETag(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/list.db", cacheEnv("LINKGATE_CLICK_FLUSH_INTERVAL=1h")...)
	s.create(t, `{"url":"https://example.com/list/1"}`)
	list := s.URL + "/api/v1/links"
	first := do(t, "GET", list, nil, adminAuth)
	tag := first.Header.Get("ETag")
	if first.Status != 200 || tag == "" || strings.HasPrefix(tag, "W/") {
		t.Fatalf("list: %d ETag %q", first.Status, tag)
	}
	r := do(t, "GET", list, nil, adminAuth, "If-None-Match: "+tag)
	if r.Status != 304 || r.Header.Get("ETag") != tag || r.Header.Get("Cache-Control") != "private, no-cache" || !cacheVaryHas(r.Header, "Authorization") {
		t.Fatalf("conditional list: %d ETag %q Cache-Control %q Vary %q", r.Status, r.Header.Get("ETag"),
			r.Header.Get("Cache-Control"), r.Header.Values("Vary"))
	}
	s.create(t, `{"url":"https://example.com/list/2"}`)
	r = do(t, "GET", list, nil, adminAuth, "If-None-Match: "+tag)
	if r.Status != 200 || r.Header.Get("ETag") == tag {
		t.Fatalf("list after a create, old tag: %d ETag %q, want 200 with a new tag", r.Status, r.Header.Get("ETag"))
	}
}

// Redirect caching headers: private, max-age from LINKGATE_REDIRECT_MAX_AGE
// (30s by default) on every redirect status, HEAD like GET without a body,
// and no-store on 404.
func TestCacheRedirectHeaders(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "private, max-age=30"},
		{[]string{"LINKGATE_REDIRECT_MAX_AGE=90s"}, "private, max-age=90"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			s := startServer(t, "sqlite://"+t.TempDir()+"/redirect.db", cacheEnv(tc.env...)...)
			for _, status := range []int{301, 302, 307, 308} {
				url := fmt.Sprintf("https://example.com/status/%d", status)
				code := s.create(t, fmt.Sprintf(`{"url":%q,"redirect":%d}`, url, status))["code"].(string)
				get := do(t, "GET", s.URL+"/"+code, nil)
				head := do(t, "HEAD", s.URL+"/"+code, nil)
				for _, r := range []response{get, head} {
					if r.Status != status || r.Header.Get("Location") != url || r.Header.Get("Cache-Control") != tc.want {
						t.Errorf("%d link: %d Location %q Cache-Control %q, want %d %s %q",
							status, r.Status, r.Header.Get("Location"), r.Header.Get("Cache-Control"), status, url, tc.want)
					}
				}
				if len(head.Body) != 0 {
					t.Errorf("HEAD of a %d link has a body %q", status, head.Body)
				}
				_, rest := cacheRawRequest(t, s, "HEAD", "/"+code)
				if rest != "" {
					t.Errorf("raw HEAD of a %d link: %d body bytes", status, len(rest))
				}
			}
			for _, method := range []string{"GET", "HEAD"} {
				r := do(t, method, s.URL+"/nosuchcode", nil)
				if r.Status != 404 || r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Location") != "" {
					t.Errorf("%s unknown code: %d Cache-Control %q Location %q, want 404 no-store", method, r.Status,
						r.Header.Get("Cache-Control"), r.Header.Get("Location"))
				}
				if method == "HEAD" && len(r.Body) != 0 {
					t.Errorf("HEAD unknown code has a body %q", r.Body)
				}
			}
		})
	}
}

// cacheVaryHas reports whether the Vary fields of h list name.
func cacheVaryHas(h http.Header, name string) bool {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return true
			}
		}
	}
	return false
}

// cacheRawHeader returns the value of the named field in a raw header block, or "".
func cacheRawHeader(head, name string) string {
	for _, line := range strings.Split(head, "\r\n")[1:] {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cacheRawRequest sends one request with Connection: close on a fresh TCP
// connection and returns the status line and headers as sent, and every byte
// after the blank line that ends them.
func cacheRawRequest(t *testing.T, s *server, method, path string, header ...string) (head, rest string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := method + " " + path + " HTTP/1.1\r\nHost: short.test\r\nConnection: close\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("raw %s %s: reading headers: %v (got %q)", method, path, err, sb.String())
		}
		if line == "\r\n" {
			break
		}
		sb.WriteString(line)
	}
	b, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("raw %s %s: reading to EOF: %v", method, path, err)
	}
	return sb.String(), string(b)
}

// DELETE with If-None-Match matching the current representation (or *) is a
// failed precondition (RFC 9110 section 13.1.2): 412, and the link stays.
func TestCacheDeleteIfNoneMatch(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/inm.db", cacheEnv()...)
	code := cacheAlias("inm-")
	s.create(t, fmt.Sprintf(`{"url":"https://example.com/inm","code":%q}`, code))
	meta := s.URL + "/api/v1/links/" + code
	etag := do(t, "GET", meta, nil).Header.Get("ETag")
	for _, inm := range []string{etag, "*", `"other", ` + etag} {
		if r := do(t, "DELETE", meta, nil, adminAuth, "If-None-Match: "+inm); r.Status != http.StatusPreconditionFailed {
			t.Fatalf("DELETE with If-None-Match %s: %d %s, want 412", inm, r.Status, r.Body)
		}
		if g := do(t, "GET", meta, nil); g.Status != 200 {
			t.Fatalf("link gone after a refused DELETE: %d", g.Status)
		}
	}
	if r := do(t, "DELETE", meta, nil, adminAuth, `If-None-Match: "other"`); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE with a non-matching If-None-Match: %d, want 204", r.Status)
	}
}
