package httpserver

import (
	"net"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/linkgate/linkgate/internal/clientip"
)

// TestClientIPMatchesFiber: on apps configured as New configures them, with
// and without trusted proxies, clientip's Append gives exactly what c.IP() gives, and
// without proxies it allocates nothing.
func TestClientIPMatchesFiber(t *testing.T) {
	peers := map[string]*net.TCPAddr{
		"ipv4":        {IP: net.IPv4(192, 0, 2, 7).To4(), Port: 40000},
		"ipv4 in 16":  {IP: net.IPv4(127, 0, 0, 1), Port: 40000}, // net.IPv4 gives the 16-byte form
		"ipv6":        {IP: net.ParseIP("2001:db8::1"), Port: 40000},
		"ipv6 zone":   {IP: net.ParseIP("fe80::1"), Port: 40000, Zone: "eth0"},
		"mapped ipv4": {IP: net.ParseIP("::ffff:10.1.2.3"), Port: 40000},
		"no address":  {Port: 40000},
	}
	for _, proxies := range [][]string{nil, {"127.0.0.1/32", "2001:db8::/32"}} {
		ip := clientip.New(proxies)
		app := fiber.New(fiberConfig(Config{TrustedProxies: proxies}, fiber.DefaultErrorHandler))
		var got, want string
		var allocs float64
		app.Get("/", func(c *fiber.Ctx) error {
			want = c.IP()
			var buf [64]byte
			got = string(ip.Append(buf[:0], c))
			allocs = testing.AllocsPerRun(100, func() { _ = ip.Append(buf[:0], c) })
			return nil
		})
		for name, peer := range peers {
			for _, header := range []string{"", "203.0.113.9", "not-an-ip"} {
				rc := &fasthttp.RequestCtx{}
				rc.Init(&fasthttp.Request{}, peer, nil)
				rc.Request.Header.SetMethod(fiber.MethodGet)
				rc.Request.SetRequestURI("/")
				if header != "" {
					rc.Request.Header.Set("X-Real-IP", header)
				}
				app.Handler()(rc)
				if rc.Response.StatusCode() != fiber.StatusOK {
					t.Fatalf("%s: status %d", name, rc.Response.StatusCode())
				}
				if got != want {
					t.Errorf("proxies %v, peer %s, X-Real-IP %q: Append %q, c.IP() %q", proxies, name, header, got, want)
				}
				if proxies == nil && allocs != 0 {
					t.Errorf("peer %s without proxies: %v allocations, want 0", name, allocs)
				}
			}
		}
	}
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
