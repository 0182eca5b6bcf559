package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy is one rate limit: a token bucket of Burst tokens that refills at
// Limit tokens per Period. Policies are plain values; a Policy that passes
// Validate can be shared by any number of goroutines and deciders.
type Policy struct {
	// Name identifies the policy in keys, headers and metric labels
	// ("redirect", "create", "api"). It matches [a-z][a-z0-9_-]{0,31}.
	Name string
	// Limit is the number of tokens added per Period (the sustained rate).
	Limit int64
	// Period is the refill period; a whole number of microseconds, at least
	// one millisecond.
	Period time.Duration
	// Burst is the bucket capacity: the most tokens a client can spend at once.
	Burst int64
	// Disabled turns the policy off ("off" in configuration): every decision
	// allows without touching any backend, and no headers are sent.
	Disabled bool
	// FailOpen makes the policy allow requests while the shared backend
	// (Redis) is unavailable, instead of enforcing a local bucket. linkgate
	// sets it for the redirect policy only. ParsePolicy leaves it false.
	FailOpen bool
}

// maxCapacity bounds Burst × Period (in microseconds), the largest number
// the token-bucket arithmetic handles. Staying under 2^52 keeps every value
// in the Lua script an integer that a double represents exactly, with room
// for the intermediate sums.
const maxCapacity = 1 << 52

// Validate reports whether p is a usable policy. A disabled policy is always
// valid (only its Name is checked). The error says which field is wrong.
func (p Policy) Validate() error {
	if !validName(p.Name) {
		return fmt.Errorf("rate limit policy %q: name must match [a-z][a-z0-9_-]{0,31}", p.Name)
	}
	if p.Disabled {
		return nil
	}
	switch {
	case p.Limit < 1 || p.Limit > maxCapacity:
		return fmt.Errorf("rate limit policy %q: limit must be from 1 to 2^52, got %d", p.Name, p.Limit)
	case p.Burst < 1:
		return fmt.Errorf("rate limit policy %q: burst must be at least 1, got %d", p.Name, p.Burst)
	case p.Period < time.Millisecond:
		return fmt.Errorf("rate limit policy %q: period must be at least 1ms, got %v", p.Name, p.Period)
	case p.Period%time.Microsecond != 0:
		return fmt.Errorf("rate limit policy %q: period must be a whole number of microseconds, got %v", p.Name, p.Period)
	case p.Period.Microseconds() > maxCapacity/p.Burst:
		return fmt.Errorf("rate limit policy %q: burst × period too large (%d × %v); keep it under %d token-microseconds",
			p.Name, p.Burst, p.Period, int64(maxCapacity))
	}
	return nil
}

// String renders p in the N/period[:burst] syntax ParsePolicy reads ("off"
// when disabled).
func (p Policy) String() string {
	if p.Disabled {
		return "off"
	}
	s := strconv.FormatInt(p.Limit, 10) + "/" + p.Period.String()
	if p.Burst != p.Limit {
		s += ":" + strconv.FormatInt(p.Burst, 10)
	}
	return s
}

// Window is the time an empty bucket takes to fill: Burst/Limit periods,
// rounded up to a microsecond. RateLimit-Policy advertises it as "w".
func (p Policy) Window() time.Duration {
	us := p.params().fullIn(0)
	return time.Duration(us) * time.Microsecond
}

// ParsePolicy reads the spec of the named policy, in the syntax of the
// LINKGATE_RATELIMIT_* variables:
//
//	N/period[:burst]   N tokens per period, bucket of burst tokens (default N)
//	off                disabled
//
// period is a unit (s, m, h, d meaning one of it), a count of days ("7d"), or
// a Go duration ("30s", "1m30s", "500ms"). Examples: "1200/1m:200", "30/m",
// "10/1s", "100/1h". The error names the policy and says what is wrong.
func ParsePolicy(name, spec string) (Policy, error) {
	p := Policy{Name: name}
	if !validName(name) {
		return Policy{}, fmt.Errorf("rate limit policy %q: name must match [a-z][a-z0-9_-]{0,31}", name)
	}
	s := strings.TrimSpace(spec)
	if strings.EqualFold(s, "off") {
		p.Disabled = true
		return p, nil
	}
	bad := func(format string, args ...any) (Policy, error) {
		return Policy{}, fmt.Errorf("rate limit policy %q: spec %q: %s (want N/period[:burst] like 1200/1m:200, or off)",
			name, spec, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty")
	}
	n, rest, ok := strings.Cut(s, "/")
	if !ok {
		return bad("missing /period")
	}
	period, burst, hasBurst := strings.Cut(rest, ":")
	var err error
	if p.Limit, err = strconv.ParseInt(strings.TrimSpace(n), 10, 64); err != nil || p.Limit < 1 {
		return bad("N must be a positive integer, got %q", n)
	}
	if p.Period, err = parsePeriod(strings.TrimSpace(period)); err != nil {
		return bad("%v", err)
	}
	p.Burst = p.Limit
	if hasBurst {
		if p.Burst, err = strconv.ParseInt(strings.TrimSpace(burst), 10, 64); err != nil || p.Burst < 1 {
			return bad("burst must be a positive integer, got %q", burst)
		}
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// parsePeriod reads "s", "m", "h", "d", "Nd" or a Go duration.
func parsePeriod(s string) (time.Duration, error) {
	switch s {
	case "":
		return 0, fmt.Errorf("period is empty")
	case "s":
		return time.Second, nil
	case "m":
		return time.Minute, nil
	case "h":
		return time.Hour, nil
	case "d":
		return 24 * time.Hour, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.ParseInt(days, 10, 64)
		if err != nil || d < 1 || d > 365 {
			return 0, fmt.Errorf("period %q: days must be an integer from 1 to 365", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("period %q is not a duration like 1s, 1m, 1h or 30s", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("period %q must be positive", s)
	}
	return d, nil
}

// validName reports whether s matches [a-z][a-z0-9_-]{0,31}: safe inside a
// Redis key, a structured-field string and a metric label.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// params is a policy in the scaled integer units of the token bucket (see
// scripts/lua/token_bucket.lua): one token is unit scaled units, the bucket
// gains rate units per microsecond and holds capacity units.
type params struct {
	rate, unit, burst, capacity int64
}

func (p Policy) params() params {
	unit := p.Period.Microseconds()
	return params{rate: p.Limit, unit: unit, burst: p.Burst, capacity: p.Burst * unit}
}

// fullIn is the number of microseconds a bucket holding tokens scaled units
// takes to fill.
func (pr params) fullIn(tokens int64) int64 { return ceilDiv(pr.capacity-tokens, pr.rate) }

// ceilDiv is ⌈a/b⌉ for a >= 0, b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
