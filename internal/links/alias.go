package links

// Alias length limits, in bytes (aliases are ASCII).
const (
	MinAliasLength = 3
	MaxAliasLength = 64
)

// ValidateAlias checks a custom alias a client asked for. It returns nil when
// s matches [A-Za-z0-9_-]{3,64} and is not reserved (see IsReserved);
// otherwise an EINVALID *Error with Field "code" and a message, safe to show
// to users, saying what is wrong. It never allocates on success.
func ValidateAlias(s string) error {
	for i := 0; i < len(s); i++ {
		if !codeByte(s[i]) {
			return FieldErrorf("code", "Alias may contain only letters A-Z and a-z, digits 0-9, '-' and '_'.")
		}
	}
	switch {
	case len(s) == 0:
		return FieldErrorf("code", "Alias must not be empty; omit it to get a generated code.")
	case len(s) < MinAliasLength:
		return FieldErrorf("code", "Alias must be at least %d characters long.", MinAliasLength)
	case len(s) > MaxAliasLength:
		return FieldErrorf("code", "Alias must be at most %d characters long.", MaxAliasLength)
	case IsReserved(s):
		return FieldErrorf("code", "Alias %q is reserved; choose another.", s)
	}
	return nil
}

// IsReserved reports whether s, compared case-insensitively, is a word that
// names one of the service's own routes or well-known paths and so may not be
// used as an alias: api, health, healthz, ready, readyz, live, livez, metrics,
// encurtar, static, assets, web, admin, docs, login, logout, status, robots,
// favicon, www. It does not allocate.
func IsReserved(s string) bool {
	const longest = len("encurtar")
	if len(s) < 3 || len(s) > longest {
		return false
	}
	var buf [longest]byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(s)]) {
	case "api", "health", "healthz", "ready", "readyz", "live", "livez",
		"metrics", "encurtar", "static", "assets", "web", "admin", "docs",
		"login", "logout", "status", "robots", "favicon", "www":
		return true
	}
	return false
}

// ValidCode reports whether s could be a stored code: 3 to 64 characters from
// [A-Za-z0-9_-]. Every generated code (CodeLength characters of Alphabet) and
// every accepted alias satisfies it, so the redirect path can answer 404 for
// anything else without touching a cache or store. It does not check
// reservations and does not allocate.
func ValidCode(s string) bool {
	if len(s) < MinAliasLength || len(s) > MaxAliasLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !codeByte(s[i]) {
			return false
		}
	}
	return true
}

// codeByte reports whether c may appear in a code.
func codeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
