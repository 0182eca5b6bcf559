package httpserver

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/clientip"
)

// ipCheck is an app configured as New configures it for proxies, whose one
// route compares clientip's Append with c.IP() and counts Append's
// allocations.
type ipCheck struct {
	handler   fasthttp.RequestHandler
	got, want string
	allocs    float64
}

func newIPCheck(proxies []string) *ipCheck {
	ip := clientip.New(proxies)
	app := fiber.New(fiberConfig(Config{TrustedProxies: proxies}, fiber.DefaultErrorHandler))
	k := &ipCheck{}
	app.Get("/", func(c *fiber.Ctx) error {
		k.want = c.IP()
		var buf [64]byte
		k.got = string(ip.Append(buf[:0], c))
		k.allocs = testing.AllocsPerRun(20, func() { _ = ip.Append(buf[:0], c) })
		return nil
	})
	k.handler = app.Handler()
	return k
}

// run serves one request from peer with header as X-Real-IP (none if nil).
func (k *ipCheck) run(t testing.TB, peer *net.TCPAddr, header *string) {
	t.Helper()
	rc := &fasthttp.RequestCtx{}
	rc.Init(&fasthttp.Request{}, peer, nil)
	rc.Request.Header.SetMethod(fiber.MethodGet)
	rc.Request.SetRequestURI("/")
	if header != nil {
		rc.Request.Header.Set(clientip.ProxyHeader, *header)
	}
	k.handler(rc)
	if rc.Response.StatusCode() != fiber.StatusOK {
		t.Fatalf("status %d", rc.Response.StatusCode())
	}
}

// TestClientIPMatchesFiber: on apps configured as New configures them, with
// and without trusted proxies (single addresses, ranges, entries Fiber
// never matches), clientip's Append gives exactly what c.IP() gives for
// trusted and untrusted peers of both families and for proxy headers well
// and badly formed. It allocates nothing without proxies, nor behind a
// trusted proxy that sends one address, as nginx does.
func TestClientIPMatchesFiber(t *testing.T) {
	peers := map[string]*net.TCPAddr{
		"ipv4":        {IP: net.IPv4(192, 0, 2, 7).To4(), Port: 40000},
		"ipv4 in 16":  {IP: net.IPv4(127, 0, 0, 1), Port: 40000}, // net.IPv4 gives the 16-byte form
		"loopback 4":  {IP: net.IPv4(127, 0, 0, 1).To4(), Port: 40000},
		"ipv6":        {IP: net.ParseIP("2001:db8::1"), Port: 40000},
		"ipv6 lo":     {IP: net.IPv6loopback, Port: 40000},
		"ipv6 zone":   {IP: net.ParseIP("fe80::1"), Port: 40000, Zone: "eth0"},
		"mapped ipv4": {IP: net.ParseIP("::ffff:10.1.2.3"), Port: 40000},
		"no address":  {Port: 40000},
	}
	headers := []string{"203.0.113.9", "2001:db8:1::9", "2001:DB8::A", "not-an-ip", "", " 203.0.113.9",
		"203.0.113.9 ", "203.0.113.9, 198.51.100.1", "bogus, 198.51.100.1", "::ffff:1.2.3.4", "1.2.3",
		"01.2.3.4", "256.1.1.1", "1.2.3.4.", ".1.2.3.4", "::1", ":1", "1::", "fe80::1%eth0", "1.2.3.4:80",
		"[2001:db8::1]", "2001:db8::1,", ",2001:db8::1", "abc", "a.b.c.d",
		// Both dots and colons: Fiber gives none of these back, though its
		// IPv6 checker alone accepts the first three.
		"0::ffff:1.2.3.4", "1::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", ":.", "1.:"}
	proxySets := [][]string{
		nil,
		{"127.0.0.1/32", "2001:db8::/32"},
		{"127.0.0.1", "::1"},
		{"10.1.2.3"},              // trusts the mapped peer too: its text is dotted
		{"::ffff:10.1.2.3"},       // matches no peer in Fiber (peers print dotted)
		{"2001:DB8::1"},           // matches no peer in Fiber (peers print lower case)
		{"::ffff:10.0.0.0/104"},   // net.ParseCIDR makes it 10.0.0.0/8: IPv4 peers are in it
		{"10.0.0.0/8", "fe80::1"}, // the zone is not part of a peer's text
		{"192.0.2.0/24"},
	}
	for _, proxies := range proxySets {
		k := newIPCheck(proxies)
		for name, peer := range peers {
			try := func(header *string) {
				k.run(t, peer, header)
				shown := "none"
				if header != nil {
					shown = *header
				}
				if k.got != k.want {
					t.Errorf("proxies %v, peer %s, X-Real-IP %q: Append %q, c.IP() %q", proxies, name, shown, k.got, k.want)
				}
				// The cases nginx and a direct client produce: no allocation.
				addr, ok := netip.AddrFromSlice(peer.IP)
				common := ok && (proxies == nil || header != nil && (*header == "203.0.113.9" || *header == "2001:db8:1::9" || *header == "::1"))
				if common && k.allocs != 0 {
					t.Errorf("proxies %v, peer %s (%v), X-Real-IP %q: %v allocations, want 0", proxies, name, addr, shown, k.allocs)
				}
			}
			try(nil)
			for _, h := range headers {
				try(&h)
			}
		}
	}
}

// FuzzClientIPMatchesFiber: for any peer address, X-Real-IP value and trusted
// proxy entry that LINKGATE_TRUSTED_PROXIES accepts, Append is c.IP().
func FuzzClientIPMatchesFiber(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1}, "203.0.113.9", "127.0.0.1")
	f.Add([]byte{127, 0, 0, 1}, "2001:db8::9", "127.0.0.0/8")
	f.Add([]byte(net.ParseIP("::ffff:10.1.2.3")), "10.9.9.9", "10.1.2.3")
	f.Add([]byte(net.ParseIP("2001:db8::1")), "1.2.3.4, 5.6.7.8", "2001:db8::/32")
	f.Add([]byte(net.ParseIP("2001:db8::1")), "::ffff:1.2.3.4", "2001:db8::1")
	f.Add([]byte{10, 0, 0, 1}, " 1.2.3.4", "10.0.0.1")
	f.Add([]byte{10, 0, 0, 1}, "0:0:0:0:0:0:0:1", "10.0.0.1")
	f.Add([]byte{10, 0, 0, 1}, "1::1.2.3.4", "10.0.0.0/8")
	f.Add([]byte(net.ParseIP("::ffff:10.1.2.3")), "0::ffff:1.2.3.4", "::ffff:10.0.0.0/104")
	f.Fuzz(func(t *testing.T, peer []byte, header, proxy string) {
		if len(peer) != net.IPv4len && len(peer) != net.IPv6len {
			return
		}
		// As the config accepts entries: a prefix or an address.
		if _, err := netip.ParsePrefix(proxy); err != nil {
			if _, err := netip.ParseAddr(proxy); err != nil {
				return
			}
		}
		if strings.ContainsAny(header, "\r\n\x00") {
			return // not a header value a parsed request can carry
		}
		k := newIPCheck([]string{proxy})
		k.run(t, &net.TCPAddr{IP: peer, Port: 40000}, &header)
		if k.got != k.want {
			t.Errorf("proxy %q, peer %v, X-Real-IP %q: Append %q, c.IP() %q", proxy, net.IP(peer), header, k.got, k.want)
		}
	})
}

// TestClientNetwork: AppendNetwork is the address for IPv4 clients and the
// /64 for IPv6 ones, from the peer and through a trusted proxy alike.
func TestClientNetwork(t *testing.T) {
	for _, tc := range []struct {
		proxies []string
		peer    net.IP
		header  string
		want    string
	}{
		{nil, net.IPv4(192, 0, 2, 7), "", "192.0.2.7"},
		{nil, net.ParseIP("::ffff:10.1.2.3"), "", "10.1.2.3"},
		{nil, net.ParseIP("2001:db8::1"), "", "2001:db8::/64"},
		{nil, net.ParseIP("2001:db8::2:3"), "", "2001:db8::/64"},
		{nil, net.ParseIP("2001:db8:0:1::9"), "", "2001:db8:0:1::/64"},
		{[]string{"127.0.0.1/32"}, net.IPv4(127, 0, 0, 1), "2001:db8:1:2:3::4", "2001:db8:1:2::/64"},
		{[]string{"127.0.0.1/32"}, net.IPv4(127, 0, 0, 1), "203.0.113.9", "203.0.113.9"},
		{[]string{"127.0.0.1/32"}, net.IPv4(192, 0, 2, 1), "203.0.113.9", "192.0.2.1"}, // untrusted peer
	} {
		ip := clientip.New(tc.proxies)
		app := fiber.New(fiberConfig(Config{TrustedProxies: tc.proxies}, fiber.DefaultErrorHandler))
		var got string
		app.Get("/", func(c *fiber.Ctx) error {
			got = string(ip.AppendNetwork([]byte("net:"), c))
			return nil
		})
		rc := &fasthttp.RequestCtx{}
		rc.Init(&fasthttp.Request{}, &net.TCPAddr{IP: tc.peer, Port: 40000}, nil)
		rc.Request.Header.SetMethod(fiber.MethodGet)
		rc.Request.SetRequestURI("/")
		if tc.header != "" {
			rc.Request.Header.Set("X-Real-IP", tc.header)
		}
		app.Handler()(rc)
		if got != "net:"+tc.want {
			t.Errorf("peer %s, X-Real-IP %q, proxies %v: %q, want %q", tc.peer, tc.header, tc.proxies, got, "net:"+tc.want)
		}
	}
}
