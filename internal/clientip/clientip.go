// Package clientip gives a request's client address as Fiber's c.IP() gives
// it, appended to a buffer instead of made into a new string.
//
// c.IP() makes a new string from the peer's net.IP on every call, and a
// redirect needed the address twice (the limiter's key, the access log): two
// of its allocations. Fiber has no appending form, hence this package.
package clientip

import (
	"net"
	"net/netip"

	"github.com/gofiber/fiber/v2"
)

// Source appends the client address of requests served by a Fiber app whose
// trusted proxies (and only then a proxy header) are set as the
// trustedProxies given to New: linkgate's app (httpserver.New) sets the
// X-Real-IP header exactly when it has trusted proxies. A Source is a small
// value; copy it freely.
type Source struct {
	proxied bool
}

// New returns the Source of apps configured with trustedProxies.
func New(trustedProxies []string) Source {
	return Source{proxied: len(trustedProxies) > 0}
}

// Append appends c's client address to dst, as c.IP() would give it.
// Without trusted proxies (the socket peer is the client) it allocates
// nothing beyond dst's growth. Behind trusted proxies it is c.IP() itself:
// the proxy header's address, believed only from a trusted peer.
func (s Source) Append(dst []byte, c *fiber.Ctx) []byte {
	if s.proxied {
		return append(dst, c.IP()...)
	}
	tcp, ok := c.Context().RemoteAddr().(*net.TCPAddr)
	if !ok {
		return append(dst, c.IP()...)
	}
	addr, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return append(dst, c.IP()...)
	}
	return addr.Unmap().AppendTo(dst)
}

// AppendNetwork appends c's client network: the address Append gives for
// IPv4, its /64 prefix for IPv6 (a single host is commonly given a whole
// /64, so keying by address would let it use 2^64 keys). For budgets whose
// point is to bound what one client can cost, not to tell hosts apart.
func (s Source) AppendNetwork(dst []byte, c *fiber.Ctx) []byte {
	n := len(dst)
	dst = s.Append(dst, c)
	addr, err := netip.ParseAddr(string(dst[n:]))
	switch {
	case err != nil || addr.Is4():
		return dst
	case addr.Is4In6(): // from a proxy header: the IPv4 client it names
		return addr.Unmap().AppendTo(dst[:n])
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return dst
	}
	return p.AppendTo(dst[:n])
}
