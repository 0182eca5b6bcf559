// Package clientip gives a request's client address as Fiber's c.IP() gives
// it, appended to a buffer instead of made into a new string.
//
// c.IP() makes a new string from the peer's net.IP on every call (behind
// trusted proxies too: its trust check formats the peer to look it up), and
// a redirect needs the address twice (the limiter's key, the access log).
// Fiber has no appending form, hence this package. It answers the common
// cases itself (a peer that is the client; one well-formed address in the
// proxy header from a trusted peer) and hands anything else to c.IP(), so
// that every answer is Fiber's by construction; the differential tests in
// package httpserver hold it to that.
package clientip

import (
	"net"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
)

// ProxyHeader is the request header that names the client behind a trusted
// proxy. Apps served with trusted proxies must set it as their Fiber
// ProxyHeader (httpserver does); the shipped nginx overwrites it with
// $remote_addr.
const ProxyHeader = "X-Real-IP"

// Source appends the client address of requests served by a Fiber app whose
// trusted proxies are the trustedProxies given to New, with
// EnableIPValidation on, and (only when there are trusted proxies)
// EnableTrustedProxyCheck on and ProxyHeader as its proxy header: how
// httpserver.New configures linkgate's app. A Source is a small value; copy
// it freely.
type Source struct {
	proxies *proxies // nil without trusted proxies
}

// proxies is Fiber's trust list in a form that is checked without
// allocating. Fiber trusts a peer when its net.IP's text equals an entry
// without a slash, or when it is inside an entry that net.ParseCIDR parses;
// entries that match nothing in Fiber are left out here too.
type proxies struct {
	addrs  []netip.Addr // the single entries, unmapped
	ranges []*net.IPNet // the CIDR entries, as Fiber parses them
}

// New returns the Source of apps configured with trustedProxies.
func New(trustedProxies []string) Source {
	if len(trustedProxies) == 0 {
		return Source{}
	}
	p := &proxies{}
	for _, e := range trustedProxies {
		if strings.Contains(e, "/") {
			if _, n, err := net.ParseCIDR(e); err == nil {
				p.ranges = append(p.ranges, n)
			}
			continue
		}
		// A peer's text equals e exactly when e is that address's text
		// (net.IP prints IPv4 and IPv4-mapped peers alike, in dotted form).
		if a, err := netip.ParseAddr(e); err == nil && net.IP(a.AsSlice()).String() == e {
			p.addrs = append(p.addrs, a.Unmap())
		}
	}
	return Source{proxies: p}
}

// trusts reports whether Fiber's trust check passes for the peer ip (as the
// connection gives it) whose unmapped address is addr.
func (p *proxies) trusts(ip net.IP, addr netip.Addr) bool {
	for _, a := range p.addrs {
		if a == addr {
			return true
		}
	}
	for _, n := range p.ranges {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// Append appends c's client address to dst, exactly as c.IP() would give it:
// the peer's address, or behind a trusted peer the address in the
// ProxyHeader. It allocates nothing beyond dst's growth for a peer with a TCP
// address and, behind a trusted one, a header of one address in the form
// nginx writes; anything else is c.IP()'s answer.
func (s Source) Append(dst []byte, c *fiber.Ctx) []byte {
	tcp, ok := c.Context().RemoteAddr().(*net.TCPAddr)
	if !ok {
		return append(dst, c.IP()...)
	}
	addr, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return append(dst, c.IP()...)
	}
	addr = addr.Unmap()
	if s.proxies == nil || !s.proxies.trusts(tcp.IP, addr) {
		return addr.AppendTo(dst)
	}
	if v := c.Get(ProxyHeader); oneAddress(v) {
		return append(dst, v...)
	}
	return append(dst, c.IP()...)
}

// oneAddress reports whether v is a header value that Fiber's IP validation
// gives back unchanged: a single IPv4 or IPv6 address, hex digits, dots and
// colons only (no list, no spaces). Fiber tells the families apart by the
// dots and colons after the first byte, and a value with both must pass
// both its IPv4 and its IPv6 checker, which no value does (the IPv4 checker
// takes no colons), so an IPv6 address with a dotted tail such as
// ::ffff:1.2.3.4 is not given back; oneAddress applies the same rule with
// the same checkers, so it accepts only what Fiber accepts. Everything else
// returns false (c.IP() handles it).
func oneAddress(v string) bool {
	if v == "" {
		return false
	}
	var dots, colons bool
	for i := 0; i < len(v); i++ {
		b := v[i]
		if !isHex(b) && b != '.' && b != ':' {
			return false
		}
		if i > 0 { // as Fiber: the first byte does not count
			dots = dots || b == '.'
			colons = colons || b == ':'
		}
	}
	switch {
	case dots && !colons:
		return utils.IsIPv4(v)
	case colons && !dots:
		return utils.IsIPv6(v)
	}
	return false
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
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
