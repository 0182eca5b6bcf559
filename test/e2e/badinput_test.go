package e2e

import (
	"encoding/json"
	"mime"
	"net"
	"strings"
	"testing"
	"time"
)

type badCase struct {
	name   string
	method string
	path   string
	body   string
	header []string
	want   int  // exact status
	seed   bool // answers {"erro": ...} instead of problem+json
}

func badInputCases() []badCase {
	long := "https://example.com/" + strings.Repeat("a", 2049-len("https://example.com/"))
	big := `{"url":"https://example.com/` + strings.Repeat("b", 17<<10) + `"}`
	create := func(name, body string, want int) badCase {
		return badCase{name: name, method: "POST", path: "/api/v1/links", body: body, header: []string{jsonCT}, want: want}
	}
	url := func(name, u string) badCase {
		b, _ := json.Marshal(map[string]string{"url": u})
		return create(name, string(b), 422)
	}
	seed := func(name, body string, want int, header ...string) badCase {
		if header == nil {
			header = []string{jsonCT}
		}
		return badCase{name: name, method: "POST", path: "/encurtar", body: body, header: header, want: want, seed: true}
	}
	return []badCase{
		create("malformed JSON", `{"url":`, 400),
		create("not JSON", `url=https://example.com`, 400),
		create("JSON array", `[{"url":"https://example.com"}]`, 400),
		create("JSON string", `"https://example.com"`, 400),
		create("empty body", ``, 400),
		create("two objects", `{"url":"https://example.com/1"} {"url":"https://example.com/2"}`, 400),
		create("unknown field", `{"url":"https://example.com","owner":"me"}`, 400),
		create("url is a number", `{"url":123}`, 400),
		create("url missing", `{}`, 422),
		create("url null", `{"url":null}`, 422),
		{name: "wrong content type", method: "POST", path: "/api/v1/links", body: `{"url":"https://example.com"}`, header: []string{"Content-Type: text/plain"}, want: 415},
		{name: "no content type", method: "POST", path: "/api/v1/links", body: `{"url":"https://example.com"}`, want: 415},
		{name: "form content type", method: "POST", path: "/api/v1/links", body: `url=https://example.com`, header: []string{"Content-Type: application/x-www-form-urlencoded"}, want: 415},
		create("17 KiB body", big, 413),
		url("javascript scheme", "javascript:alert(1)"),
		url("javascript mixed case", "JaVaScRiPt:alert(1)"),
		url("javascript after spaces", "   javascript:alert(1)"),
		url("javascript after control char", "\x01javascript:alert(1)"),
		url("javascript after tab", "\tjavascript:alert(1)"),
		url("data scheme", "data:text/html,<script>alert(1)</script>"),
		url("DATA scheme", "DATA:text/html;base64,PHNjcmlwdD4="),
		url("file scheme", "file:///etc/passwd"),
		url("ftp scheme", "ftp://example.com/file"),
		url("FTP scheme", "FtP://example.com/file"),
		url("loopback", "http://127.0.0.1/"),
		url("loopback decimal", "http://2130706433/"),
		url("loopback hex", "http://0x7f000001/"),
		url("loopback short", "http://127.1/"),
		url("loopback IPv6", "http://[::1]/"),
		url("IPv4-mapped loopback", "http://[::ffff:127.0.0.1]/"),
		url("private 10/8", "http://10.0.0.1/"),
		url("private 192.168", "http://192.168.1.1/"),
		url("link-local metadata", "http://169.254.169.254/latest/meta-data/"),
		url("localhost", "http://localhost:8080/"),
		url("userinfo", "https://user:pass@example.com/"),
		url("CRLF injection", "https://example.com/\r\nSet-Cookie: a=1"),
		url("LF injection", "https://example.com/\nLocation: https://evil.example"),
		url("2049-byte URL", long),
		url("own host", "http://short.test/abc"),
		url("no host", "https:///path"),
		url("empty URL", ""),
		create("alias too short", `{"url":"https://example.com","code":"ab"}`, 422),
		create("alias too long", `{"url":"https://example.com","code":"`+strings.Repeat("a", 65)+`"}`, 422),
		create("alias with space", `{"url":"https://example.com","code":"bad alias"}`, 422),
		create("alias with slash", `{"url":"https://example.com","code":"a/b/c"}`, 422),
		create("alias with CRLF", `{"url":"https://example.com","code":"abc\r\nX-Injected: 1"}`, 422),
		create("alias unicode", `{"url":"https://example.com","code":"café"}`, 422),
		create("reserved alias api", `{"url":"https://example.com","code":"api"}`, 422),
		create("reserved alias Metrics", `{"url":"https://example.com","code":"Metrics"}`, 422),
		create("reserved alias encurtar", `{"url":"https://example.com","code":"encurtar"}`, 422),
		create("alias taken", `{"url":"https://example.com/other","code":"taken"}`, 409),
		create("redirect 200", `{"url":"https://example.com","redirect":200}`, 422),
		create("expires in the past", `{"url":"https://example.com","expires_at":"2001-01-01T00:00:00Z"}`, 422),
		create("expires not RFC 3339", `{"url":"https://example.com","expires_at":"tomorrow"}`, 400),
		{name: "bad cursor", method: "GET", path: "/api/v1/links?cursor=%%%", header: []string{adminAuth}, want: 400},
		{name: "forged cursor", method: "GET", path: "/api/v1/links?cursor=djE6LTE", header: []string{adminAuth}, want: 400},
		{name: "cursor not base64", method: "GET", path: "/api/v1/links?cursor=not-a-cursor!", header: []string{adminAuth}, want: 400},
		{name: "limit zero", method: "GET", path: "/api/v1/links?limit=0", header: []string{adminAuth}, want: 400},
		{name: "limit huge", method: "GET", path: "/api/v1/links?limit=100000", header: []string{adminAuth}, want: 400},
		{name: "limit text", method: "GET", path: "/api/v1/links?limit=ten", header: []string{adminAuth}, want: 400},
		{name: "list without key", method: "GET", path: "/api/v1/links", want: 401},
		{name: "list with wrong key", method: "GET", path: "/api/v1/links", header: []string{"Authorization: Bearer wrong-key-0123456789"}, want: 401},
		{name: "list with basic auth", method: "GET", path: "/api/v1/links", header: []string{"Authorization: Basic YTpi"}, want: 401},
		{name: "delete without key", method: "DELETE", path: "/api/v1/links/taken", want: 401},
		// A wrong key is refused even where no key is needed (CheckAuth, not RequireAdmin).
		{name: "create with wrong key", method: "POST", path: "/api/v1/links", body: `{"url":"https://example.com/wrongkey"}`, header: []string{jsonCT, "Authorization: Bearer wrong-key-0123456789"}, want: 401},
		{name: "read with wrong key", method: "GET", path: "/api/v1/links/taken", header: []string{"Authorization: Bearer wrong-key-0123456789"}, want: 401},
		seed("seed create with wrong key", `{"url_longa":"https://example.com/wrongkey"}`, 401, jsonCT, "Authorization: Bearer wrong-key-0123456789"),
		{name: "delete unknown", method: "DELETE", path: "/api/v1/links/nosuchcode", header: []string{adminAuth}, want: 404},
		{name: "unknown code", method: "GET", path: "/nosuchcode", want: 404},
		{name: "unknown API route", method: "GET", path: "/api/v1/nothing", want: 404},
		{name: "PUT on links", method: "PUT", path: "/api/v1/links", body: `{}`, header: []string{jsonCT}, want: 405},
		{name: "unknown method", method: "FROB", path: "/api/v1/links", want: 405},
		{name: "spoofed X-Forwarded-For", method: "POST", path: "/api/v1/links", body: `{"url":"javascript:x"}`, header: []string{jsonCT, "X-Forwarded-For: 8.8.8.8", "X-Real-IP: 8.8.8.8"}, want: 422},
		seed("seed malformed JSON", `{"url_longa":`, 400),
		seed("seed missing url_longa", `{}`, 400),
		seed("seed javascript", `{"url_longa":"javascript:alert(1)"}`, 400),
		seed("seed private target", `{"url_longa":"http://10.1.2.3/"}`, 400),
		seed("seed unknown field", `{"url_longa":"https://example.com","x":1}`, 400),
		seed("seed wrong content type", `{"url_longa":"https://example.com"}`, 415, "Content-Type: text/plain"),
		seed("seed 17 KiB body", `{"url_longa":"https://example.com/`+strings.Repeat("c", 17<<10)+`"}`, 413),
	}
}

// Every bad input answers its 4xx with a problem+json body (or the seed route's
// {"erro"} body) and leaves the store exactly as it was.
func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	cases := badInputCases()
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for name, newDB := range storeURLs(t) {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, newDB(t))
			s.create(t, `{"url":"https://example.com/taken","code":"taken"}`)
			s.create(t, `{"url":"https://example.com/other"}`)
			before := s.snapshot(t)
			for _, tc := range cases {
				r := do(t, tc.method, s.URL+tc.path, []byte(tc.body), tc.header...)
				if r.Status != tc.want {
					t.Errorf("%s: status %d, want %d; body %s", tc.name, r.Status, tc.want, r.Body)
					continue
				}
				mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
				if tc.seed {
					var m map[string]string
					if json.Unmarshal(r.Body, &m) != nil || m["erro"] == "" {
						t.Errorf("%s: body %q, want {\"erro\": ...}", tc.name, r.Body)
					}
				} else if mt != "application/problem+json" {
					t.Errorf("%s: content type %q, want application/problem+json", tc.name, r.Header.Get("Content-Type"))
				} else {
					p := r.json(t)
					if p["status"] != float64(tc.want) || !strings.HasPrefix(p["type"].(string), "urn:linkgate:problem:") || p["title"] == "" {
						t.Errorf("%s: problem %s lacks status/type/title", tc.name, r.Body)
					}
				}
			}
			if after := s.snapshot(t); !equalMaps(before, after) {
				t.Fatalf("store changed by bad input:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// Header-level garbage that net/http refuses to send, written on a raw socket.
func TestRawGarbageGets4xx(t *testing.T) {
	s := startServer(t, "sqlite://"+t.TempDir()+"/raw.db")
	for name, raw := range map[string]string{
		"bare LF in header":  "GET /abc HTTP/1.1\r\nHost: x\r\nX-A: 1\nInjected: 2\r\n\r\n",
		"no host":            "GET /abc HTTP/1.1\r\n\r\n",
		"huge header":        "GET /abc HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 20000) + "\r\n\r\n",
		"bad content length": "POST /api/v1/links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
	} {
		conn, err := net.DialTimeout("tcp", s.URL[len("http://"):], time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte(raw))
		buf := make([]byte, 512)
		n, _ := conn.Read(buf)
		conn.Close()
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		if n > 0 && (strings.Contains(line, " 5") || !strings.Contains(line, " 4") && !strings.Contains(line, " 3")) {
			t.Errorf("%s: answered %q", name, line)
		}
	}
	if r := do(t, "GET", s.URL+"/live", nil); r.Status != 200 {
		t.Fatalf("server unhealthy after garbage: %d", r.Status)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
