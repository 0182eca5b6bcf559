package links

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// DefaultMaxURLLength is the URL length limit URLPolicy applies when its
// MaxLength is zero or negative.
const DefaultMaxURLLength = 2048

// URLPolicy decides which target URLs may be shortened and how they are
// stored. The zero value is usable: no own hosts, DefaultMaxURLLength.
// A URLPolicy is safe for concurrent use as long as nobody modifies it.
//
// Normalize accepts a URL only when all of these hold:
//
//   - It is at most MaxLength bytes, both as given (before trimming) and once
//     normalised. Only leading and trailing ASCII spaces are trimmed.
//   - It is valid UTF-8 and contains no ASCII or C1 control character (so no
//     CR, LF or TAB anywhere: header injection), no backslash, no whitespace
//     and no invisible bidirectional control character.
//   - It is absolute: scheme http or https (any case, stored lowercase)
//     followed by "//" and an authority. javascript:, data:, file:, ftp:,
//     mailto:, "//host" and "host/path" are all refused.
//   - The authority has no userinfo, not even an empty "user@", and any port
//     is decimal 1-65535 (stored without leading zeros; an empty port is
//     refused).
//   - The host contains no '%' (percent-decoding could smuggle a different
//     host past these checks). Names are mapped with UTS #46 (the
//     golang.org/x/net/idna lookup profile, without the CheckHyphens rule,
//     as WHATWG URL does, so CDN names like "r4---sn-abc.example.com" work)
//     and stored in lowercase punycode; invalid IDNs are refused. Mapping
//     happens before any other check, so full-width digits or ideographic
//     full stops cannot disguise an IP address.
//   - IP literals are found and parsed the way browsers do (WHATWG URL host
//     parser): if the last label, after dropping one trailing dot, is a
//     number (decimal, 0x-hex or 0-octal), the whole host must parse as an
//     IPv4 address in any of its forms (127.1, 0x7f.0.0.1, 0177.0.0.1,
//     2130706433) or the URL is refused. Accepted IPv4 hosts are stored in
//     dotted decimal; IPv6 hosts (in brackets, zone identifiers refused) in
//     RFC 5952 form.
//   - IP addresses must be globally routable unicast. Refused: unspecified
//     and "this network" (0.0.0.0/8, ::), loopback (127.0.0.0/8, ::1),
//     private (RFC 1918, fc00::/7, fec0::/10), shared CGNAT (100.64.0.0/10),
//     link-local (169.254.0.0/16 including the 169.254.169.254 cloud
//     metadata address, fe80::/10), IETF protocol assignments
//     (192.0.0.0/24), benchmarking (198.18.0.0/15, 2001:2::/48), reserved
//     and broadcast (240.0.0.0/4), multicast (224.0.0.0/4, ff00::/8),
//     discard-only (100::/64), Teredo (2001::/32) and local-use NAT64
//     (64:ff9b:1::/48). Documentation ranges (192.0.2.0/24, 198.51.100.0/24,
//     203.0.113.0/24, 2001:db8::/32, 3fff::/20) are refused too: no real
//     host lives there, so such a link is always a mistake. IPv6 addresses
//     that embed an IPv4 address (IPv4-mapped ::ffff:0:0/96, IPv4-compatible
//     ::/96, IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96, 6to4
//     2002::/16) are judged by the embedded address.
//   - Host names are LDH names of at most 253 bytes: labels of 1 to 63
//     letters, digits and hyphens, not starting or ending with a hyphen
//     (so underscores are refused). A name must contain a dot: single-label
//     names such as "intranet" only resolve inside private networks.
//     One trailing dot is allowed, kept in the stored URL, and ignored by
//     the checks.
//   - The host is not localhost or a name under .localhost, .local (mDNS),
//     .localdomain, .internal or .home.arpa (names reserved for private
//     networks), and not one of OwnHosts (a link to the shortener itself
//     could loop).
//
// Apart from the scheme, the host and the port, the stored URL is what
// net/url makes of the input (url.URL.String): non-ASCII and unsafe bytes in
// the path and fragment are percent-encoded, while the path's own escapes
// (such as %2F) are kept. Non-ASCII bytes in the query are percent-encoded
// as UTF-8 too (as browsers do), so the stored URL is always printable ASCII
// and safe in a Location header. Normalize is idempotent:
// Normalize(Normalize(x)) == Normalize(x).
type URLPolicy struct {
	// OwnHosts are the shortener's own host names (or IP addresses), with or
	// without a port, compared after the same normalisation as URL hosts:
	// case-insensitively, as punycode, without port and trailing dot. Full
	// URLs such as "https://sho.rt" are accepted too. Links to them are
	// refused.
	OwnHosts []string
	// MaxLength is the largest accepted URL in bytes; zero or negative means
	// DefaultMaxURLLength.
	MaxLength int
}

// maxHostInMessage bounds how much of a rejected host an error message quotes.
const maxHostInMessage = 80

// Normalize validates raw as a link target and returns the URL to store. It
// returns an EINVALID *Error with Field "url" whose Message (safe to show to
// users) says why the URL was refused; the rules are listed on URLPolicy.
func (p URLPolicy) Normalize(raw string) (string, error) {
	maxLen := p.MaxLength
	if maxLen <= 0 {
		maxLen = DefaultMaxURLLength
	}
	if len(raw) > maxLen {
		return "", urlErrorf("URL is too long: %d bytes, the limit is %d.", len(raw), maxLen)
	}
	s := strings.Trim(raw, " ")
	if s == "" {
		return "", urlErrorf("URL is required.")
	}
	if err := checkURLText(s); err != nil {
		return "", err
	}

	// Scheme: RFC 3986 ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) before ':'.
	colon := strings.IndexByte(s, ':')
	if colon <= 0 || !validScheme(s[:colon]) {
		return "", urlErrorf("URL must start with http:// or https://.")
	}
	scheme := strings.ToLower(s[:colon])
	if scheme != "http" && scheme != "https" {
		if len(scheme) > 20 {
			return "", urlErrorf("URL scheme must be http or https.")
		}
		return "", urlErrorf("URL scheme must be http or https, not %q.", scheme)
	}
	rest := s[colon+1:]
	if !strings.HasPrefix(rest, "//") {
		return "", urlErrorf("URL must have the form %s://host/path.", scheme)
	}
	authority := rest[2:]
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if strings.IndexByte(authority, '@') >= 0 {
		return "", urlErrorf("URL must not contain credentials (user:password@ before the host).")
	}
	hostText, port, err := splitAuthority(authority)
	if err != nil {
		return "", err
	}
	h, err := parseHost(hostText)
	if err != nil {
		return "", err
	}
	if err := p.checkHost(hostText, h); err != nil {
		return "", err
	}

	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", urlErrorf("URL is malformed: %s.", err)
	}
	// Our authority parsing and net/url's must agree, or the checks above
	// may have looked at a different host than the one stored.
	if u.Opaque != "" || u.User != nil || u.Host != authority || !strings.EqualFold(u.Scheme, scheme) {
		return "", urlErrorf("URL is malformed.")
	}
	u.Scheme = scheme
	u.Host = h.stored
	if port != "" {
		u.Host += ":" + port
	}
	u.RawQuery = escapeNonASCII(u.RawQuery)
	if u.RawPath != "" {
		// net/url keeps RawPath only if it needs no escaping; otherwise it
		// re-escapes the decoded Path and turns %2F into '/'. Escape just
		// the bytes that need it so the path's own encoding survives.
		u.RawPath = escapePath(u.RawPath)
	}
	out := u.String()
	if len(out) > maxLen {
		return "", urlErrorf("URL is too long once normalised (international characters are percent-encoded): %d bytes, the limit is %d.", len(out), maxLen)
	}
	return out, nil
}

// urlErrorf returns an EINVALID error about the "url" field.
func urlErrorf(format string, args ...any) *Error {
	return FieldErrorf("url", format, args...)
}

// checkURLText refuses invalid UTF-8, control characters, backslashes,
// whitespace and bidirectional controls anywhere in s.
func checkURLText(s string) error {
	if !utf8.ValidString(s) {
		return urlErrorf("URL must be valid UTF-8 text.")
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return urlErrorf("URL must not contain control characters such as tabs or line breaks.")
		case r == '\\':
			return urlErrorf("URL must not contain backslashes.")
		case r == ' ':
			return urlErrorf("URL must not contain spaces; percent-encode them as %%20.")
		case unicode.IsSpace(r) || unicode.Is(unicode.Zs, r):
			return urlErrorf("URL must not contain whitespace characters.")
		case r == '\u200e' || r == '\u200f' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069'):
			return urlErrorf("URL must not contain invisible bidirectional control characters.")
		}
	}
	return nil
}

// validScheme reports whether s matches RFC 3986's scheme production.
func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// splitAuthority splits an authority without userinfo into the host text and
// the canonical decimal port ("" when there is none).
func splitAuthority(a string) (host, port string, err error) {
	if a == "" {
		return "", "", urlErrorf("URL must contain a host.")
	}
	portText, hasPort := "", false
	if a[0] == '[' {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return "", "", urlErrorf("URL host has an unclosed '[' bracket.")
		}
		host = a[:end+1]
		switch after := a[end+1:]; {
		case after == "":
		case after[0] == ':':
			portText, hasPort = after[1:], true
		default:
			return "", "", urlErrorf("URL host must end after the ']' of an IPv6 address, or continue with :port.")
		}
	} else {
		host = a
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			host, portText, hasPort = a[:i], a[i+1:], true
		}
		if strings.IndexByte(host, ':') >= 0 {
			return "", "", urlErrorf("URL host %s is not valid: a host has at most one :port, and IPv6 addresses must be in brackets.", quoteHost(host))
		}
		if strings.ContainsAny(host, "[]") {
			return "", "", urlErrorf("URL host %s is not valid.", quoteHost(host))
		}
	}
	if host == "" || host == "[]" {
		return "", "", urlErrorf("URL must contain a host.")
	}
	if hasPort {
		n, ok := parsePort(portText)
		if !ok {
			return "", "", urlErrorf("URL port must be a number from 1 to 65535.")
		}
		port = strconv.Itoa(n)
	}
	return host, port, nil
}

// parsePort parses a decimal port in 1..65535 (leading zeros allowed).
func parsePort(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return 0, false
		}
	}
	return n, n > 0
}

// host is a parsed, normalised URL host.
type host struct {
	stored string     // as written into the stored URL
	name   string     // DNS name for the checks: punycode, no trailing dot; "" for IPs
	ip     netip.Addr // valid for IP literals
}

// key is the form hosts are compared in.
func (h host) key() string {
	if h.ip.IsValid() {
		return h.ip.Unmap().String()
	}
	return h.name
}

// parseHost normalises the host text of an authority: IPv6 literals, IDN
// mapping, IPv4 in any notation, and the LDH name rules.
func parseHost(text string) (host, error) {
	if text[0] == '[' {
		inner := text[1 : len(text)-1]
		if strings.IndexByte(inner, '%') >= 0 {
			return host{}, urlErrorf("URL host must not contain an IPv6 zone identifier.")
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || !ip.Is6() {
			return host{}, urlErrorf("URL host %s is not a valid IPv6 address.", quoteHost(text))
		}
		return host{stored: "[" + ip.String() + "]", ip: ip}, nil
	}
	if strings.IndexByte(text, '%') >= 0 {
		return host{}, urlErrorf("URL host must not contain percent-encoded characters.")
	}
	ascii, err := idnaProfile().ToASCII(text)
	if err != nil {
		return host{}, urlErrorf("URL host %s is not a valid domain name.", quoteHost(text))
	}
	name := strings.TrimSuffix(ascii, ".")
	if last := name[strings.LastIndexByte(name, '.')+1:]; endsInNumber(last) {
		ip, ok := parseIPv4(name)
		if !ok {
			return host{}, urlErrorf("URL host %s is not a valid IPv4 address.", quoteHost(text))
		}
		return host{stored: ip.String(), ip: ip}, nil
	}
	if !validDNSName(name) {
		return host{}, urlErrorf("URL host %s is not a valid domain name.", quoteHost(text))
	}
	return host{stored: ascii, name: name}, nil
}

// idnaProfile is the idna lookup profile without the CheckHyphens rule,
// matching the WHATWG URL standard's domain-to-ASCII. The profile is
// immutable and cheap to build.
func idnaProfile() *idna.Profile {
	return idna.New(
		idna.MapForLookup(),
		idna.BidiRule(),
		idna.CheckJoiners(true),
		idna.CheckHyphens(false),
		idna.Transitional(false),
	)
}

// endsInNumber reports whether the last label of a host makes it an IPv4
// candidate under the WHATWG URL host parser: all digits, or a valid IPv4
// number ("0x" and "0x" followed by hex digits included).
func endsInNumber(last string) bool {
	if last == "" {
		return false
	}
	digits := true
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			digits = false
			break
		}
	}
	if digits {
		return true
	}
	_, ok := parseIPv4Number(last)
	return ok
}

// parseIPv4 parses s (without a trailing dot) with the WHATWG IPv4 parser:
// one to four dot-separated numbers, each decimal, 0x-hex or 0-octal, all but
// the last at most 255 and the last filling the remaining bytes.
func parseIPv4(s string) (netip.Addr, bool) {
	var parts [4]uint64
	n := 0
	for _, label := range strings.Split(s, ".") {
		if n == len(parts) {
			return netip.Addr{}, false
		}
		v, ok := parseIPv4Number(label)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
	}
	if n == 0 {
		return netip.Addr{}, false
	}
	for i := 0; i < n-1; i++ {
		if parts[i] > 255 {
			return netip.Addr{}, false
		}
	}
	lastBits := uint(8 * (5 - n))
	if parts[n-1] >= 1<<lastBits {
		return netip.Addr{}, false
	}
	v := parts[n-1]
	for i := 0; i < n-1; i++ {
		v |= parts[i] << (8 * (3 - uint(i)))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Number parses one IPv4 part: "0x"/"0X" prefix means hex (an empty
// rest is 0), a leading "0" means octal, else decimal. Values above 2^32 fail.
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		var d uint64
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 1<<32 {
			return 0, false
		}
	}
	return v, true
}

// validDNSName reports whether name is an LDH host name of at most 253 bytes
// with labels of 1-63 bytes that do not start or end with a hyphen.
func validDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// checkHost applies the policy to a parsed host; text is the host as written,
// for messages.
func (p URLPolicy) checkHost(text string, h host) error {
	if h.ip.IsValid() {
		if reason := ipReason(h.ip); reason != "" {
			shown := h.stored
			if !strings.EqualFold(text, shown) {
				shown = quoteHost(text) + " (" + h.stored + ")"
			}
			return urlErrorf("URL host %s is %s.", shown, reason)
		}
	} else {
		if h.name == "localhost" || strings.HasSuffix(h.name, ".localhost") {
			return urlErrorf("URL host %s is this computer (localhost), not a public host.", quoteHost(text))
		}
		// Names that only resolve on private networks.
		for _, suffix := range [...]string{".local", ".localdomain", ".internal", ".home.arpa"} {
			if strings.HasSuffix(h.name, suffix) || h.name == suffix[1:] {
				return urlErrorf("URL host %s is a private network name (%s), not a public host.", quoteHost(text), suffix)
			}
		}
		if strings.IndexByte(h.name, '.') < 0 {
			return urlErrorf("URL host %s is not a public domain name; it needs a dot, as in example.com.", quoteHost(text))
		}
	}
	for _, own := range p.OwnHosts {
		if k, ok := ownHostKey(own); ok && k == h.key() {
			return urlErrorf("URL points at this shortener itself.")
		}
	}
	return nil
}

// ownHostKey normalises an OwnHosts entry to the form host.key returns.
func ownHostKey(own string) (string, bool) {
	own = strings.TrimSpace(own)
	if i := strings.Index(own, "://"); i >= 0 {
		own = own[i+3:]
	}
	if i := strings.IndexAny(own, "/?#"); i >= 0 {
		own = own[:i]
	}
	if i := strings.LastIndexByte(own, '@'); i >= 0 {
		own = own[i+1:]
	}
	if own == "" {
		return "", false
	}
	hostText, _, err := splitAuthority(own)
	if err != nil {
		// A bare IPv6 address without brackets.
		if ip, perr := netip.ParseAddr(own); perr == nil {
			return ip.WithZone("").Unmap().String(), true
		}
		return "", false
	}
	h, err := parseHost(hostText)
	if err != nil {
		return "", false
	}
	return h.key(), true
}

// ipReason returns why ip may not be a link target, as a phrase that
// completes "URL host X is ...", or "" when it is a public unicast address.
func ipReason(ip netip.Addr) string {
	ip = ip.WithZone("")
	if ip.Is4() {
		return ipv4Reason(ip)
	}
	b := ip.As16()
	embedded := func(off int) netip.Addr {
		return netip.AddrFrom4([4]byte{b[off], b[off+1], b[off+2], b[off+3]})
	}
	explain := func(kind string, v4 netip.Addr) string {
		if r := ipv4Reason(v4); r != "" {
			return kind + " address embedding " + v4.String() + ", which is " + r
		}
		return ""
	}
	switch {
	case in6(ip, 96, 0x0, 0x0, 0x0, 0x0, 0x0, 0xffff):
		// Before the Is* methods, which unmap IPv4-mapped addresses.
		return explain("an IPv4-mapped", embedded(12))
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsLoopback():
		return "a loopback address"
	case in6(ip, 96):
		return explain("an IPv4-compatible", embedded(12))
	case in6(ip, 96, 0x0, 0x0, 0x0, 0x0, 0xffff):
		return explain("an IPv4-translated", embedded(12))
	case in6(ip, 96, 0x64, 0xff9b):
		return explain("an NAT64", embedded(12))
	case in6(ip, 48, 0x64, 0xff9b, 0x1):
		return "a local-use NAT64 address"
	case in6(ip, 16, 0x2002):
		return explain("a 6to4", embedded(2))
	case in6(ip, 7, 0xfc00), in6(ip, 10, 0xfec0):
		return "a private address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsMulticast():
		return "a multicast address"
	case in6(ip, 64, 0x100):
		return "a discard-only address"
	case in6(ip, 32, 0x2001, 0xdb8), in6(ip, 20, 0x3fff):
		return "a documentation address"
	case in6(ip, 48, 0x2001, 0x2):
		return "a benchmarking address"
	case in6(ip, 32, 0x2001):
		return "a Teredo tunnel address"
	case in6(ip, 8):
		return "a reserved address"
	}
	return ""
}

// ipv4Reason is ipReason for IPv4 addresses.
func ipv4Reason(ip netip.Addr) string {
	switch {
	case in4(ip, 0, 0, 0, 0, 8):
		return "an unspecified address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case in4(ip, 100, 64, 0, 0, 10):
		return "a shared (carrier-grade NAT) address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case in4(ip, 192, 0, 0, 0, 24):
		return "a reserved (IETF protocol assignment) address"
	case in4(ip, 198, 18, 0, 0, 15):
		return "a benchmarking address"
	case in4(ip, 192, 0, 2, 0, 24), in4(ip, 198, 51, 100, 0, 24), in4(ip, 203, 0, 113, 0, 24):
		return "a documentation address"
	case ip.IsMulticast():
		return "a multicast address"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	case in4(ip, 240, 0, 0, 0, 4):
		return "a reserved address"
	}
	return ""
}

// in4 reports whether ip is in the IPv4 prefix a.b.c.d/bits.
func in4(ip netip.Addr, a, b, c, d byte, bits int) bool {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{a, b, c, d}), bits).Contains(ip)
}

// in6 reports whether ip is in the IPv6 prefix whose leading 16-bit groups
// are groups (the rest zero) and whose length is bits.
func in6(ip netip.Addr, bits int, groups ...uint16) bool {
	var a [16]byte
	for i, g := range groups {
		a[2*i], a[2*i+1] = byte(g>>8), byte(g)
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), bits).Contains(ip)
}

// quoteHost quotes a host for an error message, shortened if long.
func quoteHost(s string) string {
	if len(s) > maxHostInMessage {
		cut := maxHostInMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}

// escapePath percent-encodes the bytes of an escaped path that net/url does
// not accept unescaped (non-ASCII, '"', '<', '>', '^', '`', '{', '|', '}'),
// leaving existing escapes alone.
func escapePath(s string) string {
	return escapeBytes(s, pathByteOK)
}

// pathByteOK reports whether c may appear unescaped in a path for net/url.
func pathByteOK(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,/:;=@[]%", c) >= 0
}

// escapeNonASCII percent-encodes bytes >= 0x80 in s.
func escapeNonASCII(s string) string {
	return escapeBytes(s, func(c byte) bool { return c < 0x80 })
}

// escapeBytes percent-encodes the bytes of s for which ok is false.
func escapeBytes(s string, ok func(byte) bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ok(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
