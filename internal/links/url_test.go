package links

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// testPolicy is the policy the table runs under.
func testPolicy() URLPolicy {
	return URLPolicy{OwnHosts: []string{"sho.rt", "LinkGate.Example.org:8443", "https://go.example.net/", "[2001:4860:4860::1]:80"}}
}

type normalizeCase struct {
	in   string
	want string // normalised URL when accepted
	why  string // substring of the rejection message; "" when accepted
}

func normalizeCases() []normalizeCase {
	long := "https://example.com/" + strings.Repeat("a", DefaultMaxURLLength-len("https://example.com/"))
	tooLong := long + "a"
	return []normalizeCase{
		// Accepted, with their stored forms.
		{in: "https://example.com", want: "https://example.com"},
		{in: "HTTP://EXAMPLE.COM/Path?Q=1#F", want: "http://example.com/Path?Q=1#F"},
		{in: "HtTpS://Example.Com/", want: "https://example.com/"},
		{in: "  https://example.com/a  ", want: "https://example.com/a"},
		{in: "https://example.com:8443/x", want: "https://example.com:8443/x"},
		{in: "https://example.com:00443/x", want: "https://example.com:443/x"},
		{in: "https://example.com:65535", want: "https://example.com:65535"},
		{in: "https://bücher.de/straße", want: "https://xn--bcher-kva.de/stra%C3%9Fe"},
		{in: "https://BÜCHER.de", want: "https://xn--bcher-kva.de"},
		{in: "https://xn--bcher-kva.de", want: "https://xn--bcher-kva.de"},
		{in: "https://例子.测试/", want: "https://xn--fsqu00a.xn--0zwm56d/"},
		{in: "https://ＥＸＡＭＰＬＥ.com", want: "https://example.com"},
		{in: "https://example.com/?q=ü&x=1", want: "https://example.com/?q=%C3%BC&x=1"},
		{in: "https://example.com/#ü", want: "https://example.com/#%C3%BC"},
		{in: "https://example.com./", want: "https://example.com./"},
		{in: "https://example.com/a%2Fb?x=%0A", want: "https://example.com/a%2Fb?x=%0A"},
		{in: "https://example.com/a|b", want: "https://example.com/a%7Cb"},
		{in: "https://example.com/a%2Fb|c", want: "https://example.com/a%2Fb%7Cc"},
		{in: "https://example.com/a%2fb/ü?x=\"{}\"", want: "https://example.com/a%2fb/%C3%BC?x=\"{}\""},
		{in: "https://example.com/@user", want: "https://example.com/@user"},
		{in: "https://example.com/?", want: "https://example.com/?"},
		{in: "https://a.b.example.co.uk/p;x=1?a=b&c", want: "https://a.b.example.co.uk/p;x=1?a=b&c"},
		{in: "https://r4---sn-4g5e6nze.googlevideo.com/videoplayback", want: "https://r4---sn-4g5e6nze.googlevideo.com/videoplayback"},
		{in: "https://123.example.com/", want: "https://123.example.com/"},
		{in: "https://0x7f.example.com/", want: "https://0x7f.example.com/"},
		{in: "http://8.8.8.8/", want: "http://8.8.8.8/"},
		{in: "http://134744072/", want: "http://8.8.8.8/"},
		{in: "http://0x8.0x8.0x8.0x8/", want: "http://8.8.8.8/"},
		{in: "http://010.010.010.010/", want: "http://8.8.8.8/"},
		{in: "http://1.1/", want: "http://1.0.0.1/"},
		{in: "http://8.8.8.8.:80/", want: "http://8.8.8.8:80/"},
		{in: "http://[2001:4860:4860::8888]/", want: "http://[2001:4860:4860::8888]/"},
		{in: "http://[2001:4860:4860:0:0:0:0:8888]:8080/", want: "http://[2001:4860:4860::8888]:8080/"},
		{in: "http://[::ffff:8.8.8.8]/", want: "http://[::ffff:8.8.8.8]/"},
		{in: "http://[64:ff9b::808:808]/", want: "http://[64:ff9b::808:808]/"},
		{in: "http://[2002:808:808::1]/", want: "http://[2002:808:808::1]/"},
		{in: "https://sho.rt.example.com/", want: "https://sho.rt.example.com/"},
		{in: long, want: long},

		// Length and emptiness.
		{in: "", why: "URL is required"},
		{in: "    ", why: "URL is required"},
		{in: tooLong, why: "URL is too long"},

		// Characters.
		{in: "http://example.com/\r\nSet-Cookie: a=b", why: "control characters"},
		{in: "http://example.com/%0D%0A\nx", why: "control characters"},
		{in: "http://example.com/\tx", why: "control characters"},
		{in: "http://exa\x00mple.com/", why: "control characters"},
		{in: "http://example.com/\x7f", why: "control characters"},
		{in: "http://example.com/\u0085", why: "control characters"},
		{in: "\thttp://example.com/", why: "control characters"},
		{in: "http://example.com\\@evil.com/", why: "backslashes"},
		{in: "https:\\\\evil.com", why: "backslashes"},
		{in: "http://example.com/a b", why: "spaces"},
		{in: "http://example.com/\u00a0", why: "whitespace"},
		{in: "http://example.com/\u3000", why: "whitespace"},
		{in: "http://example.com/\u2028", why: "whitespace"},
		{in: "http://example.com/\u202egnp.exe", why: "bidirectional"},
		{in: "http://example.com/\xff", why: "UTF-8"},

		// Scheme and shape.
		{in: "javascript:alert(1)", why: `URL scheme must be http or https, not "javascript"`},
		{in: "JaVaScRiPt:alert(1)", why: "URL scheme must be http or https"},
		{in: "data:text/html,<script>alert(1)</script>", why: "URL scheme must be http or https"},
		{in: "file:///etc/passwd", why: "URL scheme must be http or https"},
		{in: "ftp://example.com/", why: "URL scheme must be http or https"},
		{in: "mailto:a@example.com", why: "URL scheme must be http or https"},
		{in: "ws://example.com/", why: "URL scheme must be http or https"},
		{in: "//example.com/x", why: "must start with http:// or https://"},
		{in: "example.com", why: "must start with http:// or https://"},
		{in: "/path", why: "must start with http:// or https://"},
		{in: ":80", why: "must start with http:// or https://"},
		{in: "http:example.com", why: "must have the form http://host/path"},
		{in: "http:/example.com", why: "must have the form http://host/path"},
		{in: "http:///path", why: "must contain a host"},
		{in: "https://", why: "must contain a host"},
		{in: "https://?q", why: "must contain a host"},
		{in: "http://example.com/%zz", why: "URL is malformed"},

		// Authority.
		{in: "http://user:pass@example.com/", why: "must not contain credentials"},
		{in: "http://user@example.com/", why: "must not contain credentials"},
		{in: "http://@example.com/", why: "must not contain credentials"},
		{in: "http://example.com@evil.com/", why: "must not contain credentials"},
		{in: "http://example.com:0/", why: "port must be a number from 1 to 65535"},
		{in: "http://example.com:65536/", why: "port must be a number from 1 to 65535"},
		{in: "http://example.com:99999999999999999999/", why: "port must be a number from 1 to 65535"},
		{in: "http://example.com:8o/", why: "port must be a number from 1 to 65535"},
		{in: "http://example.com:-1/", why: "port must be a number from 1 to 65535"},
		{in: "http://example.com:/", why: "port must be a number from 1 to 65535"},
		{in: "http://example.com:80:80/", why: "at most one :port"},
		{in: "http://%65xample.com/", why: "must not contain percent-encoded"},
		{in: "http://example.com%2F@evil.com/", why: "credentials"},
		{in: "http://example%2ecom/", why: "must not contain percent-encoded"},
		{in: "http://[fe80::1%25eth0]/", why: "IPv6 zone identifier"},

		// IPv4 in every notation.
		{in: "http://127.0.0.1/", why: "URL host 127.0.0.1 is a loopback address"},
		{in: "http://2130706433/", why: `URL host "2130706433" (127.0.0.1) is a loopback address`},
		{in: "http://0x7f000001/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://0X7F.0.0.1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://0177.0.0.1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://0177.1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://127.1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://127.0.1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://127.0.0.1.:8080/", why: "loopback address"},
		{in: "http://１２７.０.０.１/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://127。0。0。1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://①②⑦.0.0.1/", why: "(127.0.0.1) is a loopback address"},
		{in: "http://10.0.0.1/", why: "URL host 10.0.0.1 is a private address"},
		{in: "http://10.1/", why: "(10.0.0.1) is a private address"},
		{in: "http://167772161/", why: "(10.0.0.1) is a private address"},
		{in: "http://172.16.5.4/", why: "private address"},
		{in: "http://172.31.255.255/", why: "private address"},
		{in: "http://192.168.1.1:8080/", why: "private address"},
		{in: "http://169.254.169.254/latest/meta-data/", why: "169.254.169.254 is a link-local address"},
		{in: "http://0xa9fea9fe/", why: "(169.254.169.254) is a link-local address"},
		{in: "http://0.0.0.0/", why: "unspecified address"},
		{in: "http://0/", why: "(0.0.0.0) is an unspecified address"},
		{in: "http://0.1.2.3/", why: "unspecified address"},
		{in: "http://224.0.0.1/", why: "multicast address"},
		{in: "http://239.255.255.250/", why: "multicast address"},
		{in: "http://255.255.255.255/", why: "broadcast address"},
		{in: "http://240.0.0.1/", why: "reserved address"},
		{in: "http://100.64.0.1/", why: "carrier-grade NAT"},
		{in: "http://100.127.255.254/", why: "carrier-grade NAT"},
		{in: "http://192.0.0.8/", why: "IETF protocol assignment"},
		{in: "http://198.18.0.1/", why: "benchmarking address"},
		{in: "http://198.19.255.1/", why: "benchmarking address"},
		{in: "http://192.0.2.1/", why: "documentation address"},
		{in: "http://203.0.113.9/", why: "documentation address"},
		{in: "http://256.0.0.1/", why: "is not a valid IPv4 address"},
		{in: "http://1.2.3.4.5/", why: "is not a valid IPv4 address"},
		{in: "http://1..2.3/", why: "is not a valid IPv4 address"},
		{in: "http://08.0.0.1/", why: "is not a valid IPv4 address"},
		{in: "http://4294967296/", why: "is not a valid IPv4 address"},
		{in: "http://0x100000000/", why: "is not a valid IPv4 address"},
		{in: "http://1.2.65536/", why: "is not a valid IPv4 address"},
		{in: "http://example.123/", why: "is not a valid IPv4 address"},
		{in: "http://example.0x/", why: "is not a valid IPv4 address"},

		// IPv6.
		{in: "http://[::1]/", why: "URL host [::1] is a loopback address"},
		{in: "http://[0:0:0:0:0:0:0:1]:80/", why: "([::1]) is a loopback address"},
		{in: "http://[::]/", why: "unspecified address"},
		{in: "http://[::ffff:127.0.0.1]/", why: "IPv4-mapped address embedding 127.0.0.1, which is a loopback address"},
		{in: "http://[::ffff:7f00:1]/", why: "embedding 127.0.0.1, which is a loopback address"},
		{in: "http://[::ffff:a9fe:a9fe]/", why: "embedding 169.254.169.254, which is a link-local address"},
		{in: "http://[::ffff:10.0.0.1]/", why: "embedding 10.0.0.1, which is a private address"},
		{in: "http://[::127.0.0.1]/", why: "IPv4-compatible address embedding 127.0.0.1"},
		{in: "http://[::ffff:0:10.0.0.1]/", why: "IPv4-translated address embedding 10.0.0.1"},
		{in: "http://[64:ff9b::10.0.0.1]/", why: "NAT64 address embedding 10.0.0.1, which is a private address"},
		{in: "http://[64:ff9b::7f00:1]/", why: "NAT64 address embedding 127.0.0.1"},
		{in: "http://[64:ff9b:1::1]/", why: "local-use NAT64"},
		{in: "http://[2002:7f00:1::1]/", why: "6to4 address embedding 127.0.0.1"},
		{in: "http://[2002:c0a8:101::]/", why: "6to4 address embedding 192.168.1.1"},
		{in: "http://[fc00::1]/", why: "private address"},
		{in: "http://[fd12:3456:789a::1]/", why: "private address"},
		{in: "http://[fec0::1]/", why: "private address"},
		{in: "http://[fe80::1]/", why: "link-local address"},
		{in: "http://[FE80::abcd]/", why: "link-local address"},
		{in: "http://[ff02::1]/", why: "multicast address"},
		{in: "http://[2001:db8::1]/", why: "documentation address"},
		{in: "http://[2001:2::1]/", why: "benchmarking address"},
		{in: "http://[2001::1]/", why: "Teredo"},
		{in: "http://[100::1]/", why: "discard-only address"},
		{in: "http://[1.2.3.4]/", why: "is not a valid IPv6 address"},
		{in: "http://[::1/", why: "unclosed '['"},
		{in: "http://[::1]x/", why: "must end after the ']'"},
		{in: "http://[]/", why: "must contain a host"},
		{in: "http://::1/", why: "IPv6 addresses must be in brackets"},
		{in: "http://[example.com]/", why: "is not a valid IPv6 address"},

		// Names.
		{in: "http://localhost/", why: "localhost"},
		{in: "http://LOCALHOST:8080/", why: "localhost"},
		{in: "http://localhost./", why: "localhost"},
		{in: "http://ｌｏｃａｌｈｏｓｔ/", why: "localhost"},
		{in: "http://api.localhost/", why: "localhost"},
		{in: "http://printer.local/", why: "private network name (.local)"},
		{in: "http://db.internal/", why: "private network name (.internal)"},
		{in: "http://router.home.arpa/", why: "private network name (.home.arpa)"},
		{in: "http://intranet/", why: "it needs a dot"},
		{in: "http://intranet./", why: "it needs a dot"},
		{in: "http://a_b.example.com/", why: "is not a valid domain name"},
		{in: "http://-a.example.com/", why: "is not a valid domain name"},
		{in: "http://a-.example.com/", why: "is not a valid domain name"},
		{in: "http://a..example.com/", why: "is not a valid domain name"},
		{in: "http://.example.com/", why: "is not a valid domain name"},
		{in: "http://example.com../", why: "is not a valid domain name"},
		{in: "http://xn--abc.de/", why: "is not a valid domain name"},
		{in: "http://xn--/", why: "is not a valid domain name"},
		{in: "http://xn--8g7ccp.0.0.1/", why: "is not a valid domain name"},      // punycode of full-width "127"
		{in: "http://xn--mi7cdqncpe6aj.com/", why: "is not a valid domain name"}, // punycode of full-width "localhost"
		{in: "http://exa<mple.com/", why: "is not a valid domain name"},
		{in: "http://ex＠mple.com/", why: "is not a valid domain name"},
		{in: "http://a\u200db.com/", why: "is not a valid domain name"},
		{in: "http://" + strings.Repeat("a", 64) + ".com/", why: "is not a valid domain name"},
		{in: "http://" + strings.Repeat("abcdefghi.", 26) + "com/", why: "is not a valid domain name"},

		// The shortener itself.
		{in: "https://sho.rt/abc", why: "URL points at this shortener itself"},
		{in: "https://SHO.RT./abc", why: "URL points at this shortener itself"},
		{in: "https://sho.rt:443/abc", why: "URL points at this shortener itself"},
		{in: "https://linkgate.example.org/x", why: "URL points at this shortener itself"},
		{in: "http://go.example.net:8080/x", why: "URL points at this shortener itself"},
		{in: "http://[2001:4860:4860:0::1]/", why: "URL points at this shortener itself"},
	}
}

func TestNormalize(t *testing.T) {
	p := testPolicy()
	for _, tc := range normalizeCases() {
		got, err := p.Normalize(tc.in)
		if tc.why == "" {
			if err != nil {
				t.Errorf("Normalize(%q): unexpected error %v", tc.in, err)
				continue
			}
			if got != tc.want {
				t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again, err := p.Normalize(got); err != nil || again != got {
				t.Errorf("Normalize(Normalize(%q)) = %q, %v; want %q", tc.in, again, err, got)
			}
			continue
		}
		if err == nil {
			t.Errorf("Normalize(%q) = %q, want error containing %q", tc.in, got, tc.why)
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != EINVALID || e.Field != "url" {
			t.Errorf("Normalize(%q) error = %#v, want an EINVALID *Error with Field url", tc.in, err)
			continue
		}
		if !strings.Contains(e.Message, tc.why) {
			t.Errorf("Normalize(%q) message = %q, want it to contain %q", tc.in, e.Message, tc.why)
		}
		if got != "" {
			t.Errorf("Normalize(%q) returned %q along with an error", tc.in, got)
		}
	}
}

func TestNormalizeTableSize(t *testing.T) {
	var ok, bad int
	for _, tc := range normalizeCases() {
		if tc.why == "" {
			ok++
		} else {
			bad++
		}
	}
	if ok < 20 || bad < 60 {
		t.Fatalf("table has %d accepted and %d rejected cases; keep it broad", ok, bad)
	}
}

func TestNormalizeMaxLength(t *testing.T) {
	p := URLPolicy{MaxLength: 30}
	if _, err := p.Normalize("https://example.com/" + strings.Repeat("a", 10)); err != nil {
		t.Fatalf("30-byte URL refused: %v", err)
	}
	_, err := p.Normalize("https://example.com/" + strings.Repeat("a", 11))
	if err == nil || !strings.Contains(ErrorMessage(err), "URL is too long: 31 bytes, the limit is 30") {
		t.Fatalf("31-byte URL: err = %v", err)
	}
	// 25 bytes as given, 35 once ü is percent-encoded.
	_, err = p.Normalize("https://example.com/üüüüü")
	if err == nil || !strings.Contains(ErrorMessage(err), "too long once normalised") {
		t.Fatalf("URL that grows past the limit: err = %v", err)
	}
	// Spaces count towards the raw limit: a huge padded input is refused
	// before any work is done.
	_, err = p.Normalize(strings.Repeat(" ", 100) + "https://a.com")
	if err == nil || !strings.Contains(ErrorMessage(err), "URL is too long") {
		t.Fatalf("padded URL: err = %v", err)
	}
	// Zero and negative mean the default.
	for _, n := range []int{0, -5} {
		p := URLPolicy{MaxLength: n}
		u := "https://example.com/" + strings.Repeat("a", DefaultMaxURLLength-20)
		if _, err := p.Normalize(u); err != nil {
			t.Fatalf("MaxLength %d: %d-byte URL refused: %v", n, len(u), err)
		}
		if _, err := p.Normalize(u + "a"); err == nil {
			t.Fatalf("MaxLength %d: %d-byte URL accepted", n, len(u)+1)
		}
	}
}

func TestNormalizeOwnHosts(t *testing.T) {
	for _, own := range []string{"sho.rt", "SHO.RT.", "sho.rt:8080", "http://sho.rt", "https://user@sho.rt:443/path", " sho.rt "} {
		p := URLPolicy{OwnHosts: []string{"", "[", own}}
		if _, err := p.Normalize("https://sho.rt/x"); err == nil || !strings.Contains(ErrorMessage(err), "shortener itself") {
			t.Errorf("OwnHosts %q: err = %v, want the shortener-itself error", own, err)
		}
		if _, err := p.Normalize("https://sho.rt.example.com/x"); err != nil {
			t.Errorf("OwnHosts %q: a different host was refused: %v", own, err)
		}
	}
	// IDN own hosts compare as punycode, IP own hosts in canonical form.
	p := URLPolicy{OwnHosts: []string{"bücher.de", "8.8.8.8", "2001:4860:4860::8888"}}
	for _, in := range []string{"https://xn--bcher-kva.de/", "https://BÜCHER.de/", "http://134744072/", "http://[2001:4860:4860:0::8888]/", "http://[::ffff:8.8.8.8]/"} {
		if _, err := p.Normalize(in); err == nil || !strings.Contains(ErrorMessage(err), "shortener itself") {
			t.Errorf("Normalize(%q) err = %v, want the shortener-itself error", in, err)
		}
	}
}

func TestNormalizeLongHostMessage(t *testing.T) {
	host := strings.Repeat("é", 200) // not a valid DNS name once encoded: label too long
	_, err := URLPolicy{}.Normalize("https://" + host + ".com/")
	msg := ErrorMessage(err)
	if err == nil || !strings.Contains(msg, "...") || len(msg) > 200 {
		t.Fatalf("message for a long host = %q; want it shortened", msg)
	}
}

// checkNormalized asserts the invariants of an accepted URL.
func checkNormalized(t *testing.T, p URLPolicy, in, out string) {
	t.Helper()
	maxLen := p.MaxLength
	if maxLen <= 0 {
		maxLen = DefaultMaxURLLength
	}
	if len(out) > maxLen {
		t.Fatalf("Normalize(%q) = %q: %d bytes, over the limit %d", in, out, len(out), maxLen)
	}
	for i := 0; i < len(out); i++ {
		if c := out[i]; c <= 0x20 || c >= 0x7f || c == '\\' {
			t.Fatalf("Normalize(%q) = %q has byte %#x", in, out, c)
		}
	}
	if !strings.HasPrefix(out, "http://") && !strings.HasPrefix(out, "https://") {
		t.Fatalf("Normalize(%q) = %q: scheme is not http or https", in, out)
	}
	u, err := url.Parse(out)
	if err != nil {
		t.Fatalf("Normalize(%q) = %q, which net/url cannot parse: %v", in, out, err)
	}
	if u.User != nil || u.Hostname() == "" || u.Hostname() != strings.ToLower(u.Hostname()) {
		t.Fatalf("Normalize(%q) = %q: user %v, host %q", in, out, u.User, u.Hostname())
	}
	again, err := p.Normalize(out)
	if err != nil {
		t.Fatalf("Normalize(%q) = %q, which Normalize refuses: %v", in, out, err)
	}
	if again != out {
		t.Fatalf("not idempotent: Normalize(%q) = %q, Normalize(%q) = %q", in, out, out, again)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, tc := range normalizeCases() {
		f.Add(tc.in)
	}
	for _, s := range []string{
		"http://a.com/%", "http://a.com/?%zz", "http://a.com/#%zz", "http://[::ffff:1.2.3.4]:0080/",
		"http://a.com/a%2Fb|c", "https://a.com/;?#", "http://0x/", "http://a.0x/", "http://xn--zca.com/",
	} {
		f.Add(s)
	}
	p := URLPolicy{OwnHosts: []string{"sho.rt"}, MaxLength: 512}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := p.Normalize(in)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != EINVALID || e.Field != "url" || e.Message == "" || out != "" {
				t.Fatalf("Normalize(%q) = %q, %#v; want \"\" and an EINVALID url error with a message", in, out, err)
			}
			return
		}
		checkNormalized(t, p, in, out)
	})
}

func TestNormalizeAcceptedInvariants(t *testing.T) {
	p := testPolicy()
	for _, tc := range normalizeCases() {
		if out, err := p.Normalize(tc.in); err == nil {
			checkNormalized(t, p, tc.in, out)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	p := URLPolicy{OwnHosts: []string{"sho.rt"}}
	for _, bc := range []struct{ name, in string }{
		{"ascii", "https://www.example.com/some/path?utm_source=x&id=12345#top"},
		{"idn", "https://bücher.de/straße?q=ü"},
		{"ipv4", "http://134744072/"},
		{"rejected", "http://169.254.169.254/latest/meta-data/"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Normalize(bc.in)
			}
		})
	}
}
