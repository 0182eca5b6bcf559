// Package config turns LINKGATE_* environment variables (and the command-line
// flags that mirror them) into one validated, typed Config.
//
// Precedence is: documented default < environment variable < flag. A value
// that does not parse stops start-up with an error naming the variable (or
// flag). Nothing else in linkgate reads the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/ratelimit"
)

// Config is every setting linkgate has. The zero value is not useful; use
// Load.
type Config struct {
	Addr           string           // LINKGATE_ADDR: listen address
	BaseURL        *url.URL         // LINKGATE_BASE_URL: prefix of every short_url
	DatabaseURL    string           // LINKGATE_DATABASE_URL: sqlite://PATH or postgres://...
	RedisURL       string           // LINKGATE_REDIS_URL: empty runs without Redis
	TrustedProxies []string         // LINKGATE_TRUSTED_PROXIES: IPs/CIDRs whose X-Real-IP/X-Forwarded-For are believed
	CORSOrigins    []string         // LINKGATE_CORS_ORIGINS: allowed browser origins for the API
	RateRedirect   ratelimit.Policy // LINKGATE_RATELIMIT_REDIRECT: N/period[:burst] or off; fails open
	RateCreate     ratelimit.Policy // LINKGATE_RATELIMIT_CREATE
	RateAPI        ratelimit.Policy // LINKGATE_RATELIMIT_API
	Instances      int              // LINKGATE_INSTANCES: expected instance count (local fallback limiter divides by it)
	AdminKey       string           // LINKGATE_ADMIN_KEY: bootstrap admin API key (stored hashed)
	PublicCreate   bool             // LINKGATE_PUBLIC_CREATE: anonymous link creation allowed
	RedirectMaxAge time.Duration    // LINKGATE_REDIRECT_MAX_AGE: Cache-Control max-age on redirects
	ShutdownDelay  time.Duration    // LINKGATE_SHUTDOWN_DELAY: readiness-off wait before stopping the listener
	DrainTimeout   time.Duration    // LINKGATE_DRAIN_TIMEOUT: in-flight drain bound
	LogLevel       slog.Level       // LINKGATE_LOG_LEVEL: debug, info, warn, error
	ReadTimeout    time.Duration    // LINKGATE_READ_TIMEOUT: whole-request read bound (slow clients are cut off)
	WriteTimeout   time.Duration    // LINKGATE_WRITE_TIMEOUT: response write bound
	IdleTimeout    time.Duration    // LINKGATE_IDLE_TIMEOUT: keep-alive idle bound
	ClickFlush     time.Duration    // LINKGATE_CLICK_FLUSH_INTERVAL: how often counted clicks are written
	CacheSize      int              // LINKGATE_CACHE_SIZE: in-process LRU entries
	CacheTTL       time.Duration    // LINKGATE_CACHE_TTL: in-process LRU entry lifetime
	RedisCacheTTL  time.Duration    // LINKGATE_REDIS_CACHE_TTL: Redis cache entry lifetime
	NegativeTTL    time.Duration    // LINKGATE_NEGATIVE_TTL: lifetime of "unknown code" cache entries
	RedisTimeout   time.Duration    // LINKGATE_REDIS_TIMEOUT: bound on every Redis call on the request path
	StoreTimeout   time.Duration    // LINKGATE_STORE_TIMEOUT: bound on every database call (503 when it passes)
}

// setting is one row of the table that drives defaults, env, flags and -h.
type setting struct {
	env, flag, def, usage string
	set                   func(c *Config, v string) error
}

func settings() []setting {
	return []setting{
		{"LINKGATE_ADDR", "addr", ":8080", "listen address", func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return err
			}
			c.Addr = v
			return nil
		}},
		{"LINKGATE_BASE_URL", "base-url", "http://localhost:8080", "prefix of every short_url", func(c *Config, v string) error {
			u, err := url.Parse(strings.TrimRight(v, "/"))
			if err != nil {
				return err
			}
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				return errors.New("must be an http(s) URL with a host and no query, fragment or credentials")
			}
			c.BaseURL = u
			return nil
		}},
		{"LINKGATE_DATABASE_URL", "database-url", "sqlite://linkgate.db", "sqlite://PATH or postgres://...", func(c *Config, v string) error {
			if !strings.HasPrefix(v, "sqlite://") && !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
				return errors.New("must start with sqlite://, postgres:// or postgresql://")
			}
			c.DatabaseURL = v
			return nil
		}},
		{"LINKGATE_REDIS_URL", "redis-url", "", "redis://host:port/db; empty runs without Redis", func(c *Config, v string) error {
			if v != "" && !strings.HasPrefix(v, "redis://") && !strings.HasPrefix(v, "rediss://") {
				return errors.New("must start with redis:// or rediss://")
			}
			c.RedisURL = v
			return nil
		}},
		{"LINKGATE_TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated IPs/CIDRs whose X-Real-IP/X-Forwarded-For are believed", func(c *Config, v string) error {
			c.TrustedProxies = nil
			for _, p := range splitList(v) {
				if _, err := netip.ParsePrefix(p); err != nil {
					if _, err := netip.ParseAddr(p); err != nil {
						return fmt.Errorf("%q is neither an IP nor a CIDR", p)
					}
				}
				c.TrustedProxies = append(c.TrustedProxies, p)
			}
			return nil
		}},
		{"LINKGATE_CORS_ORIGINS", "cors-origins", "", "comma-separated browser origins allowed to call the API", func(c *Config, v string) error {
			c.CORSOrigins = nil
			for _, o := range splitList(v) {
				u, err := url.Parse(o)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
					return fmt.Errorf("%q is not an origin like https://app.example.com", o)
				}
				c.CORSOrigins = append(c.CORSOrigins, u.Scheme+"://"+u.Host)
			}
			return nil
		}},
		{"LINKGATE_RATELIMIT_REDIRECT", "ratelimit-redirect", "1200/1m:200", "redirect policy per client, N/period[:burst] or off; allows all while Redis is down", policy("redirect", true, func(c *Config) *ratelimit.Policy { return &c.RateRedirect })},
		{"LINKGATE_RATELIMIT_CREATE", "ratelimit-create", "30/1m:10", "create policy per client, N/period[:burst] or off", policy("create", false, func(c *Config) *ratelimit.Policy { return &c.RateCreate })},
		{"LINKGATE_RATELIMIT_API", "ratelimit-api", "600/1m:100", "API policy per client, N/period[:burst] or off", policy("api", false, func(c *Config) *ratelimit.Policy { return &c.RateAPI })},
		{"LINKGATE_INSTANCES", "instances", "1", "expected instance count; the local fallback limiter allows rate/instances", func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return errors.New("must be a whole number >= 1")
			}
			c.Instances = n
			return nil
		}},
		{"LINKGATE_ADMIN_KEY", "admin-key", "", "bootstrap admin API key (stored hashed); at least 16 characters", func(c *Config, v string) error {
			if v != "" && len(v) < 16 {
				return errors.New("must be at least 16 characters")
			}
			c.AdminKey = v
			return nil
		}},
		{"LINKGATE_PUBLIC_CREATE", "public-create", "true", "allow anonymous link creation", func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			c.PublicCreate = b
			return err
		}},
		{"LINKGATE_REDIRECT_MAX_AGE", "redirect-max-age", "30s", "Cache-Control: private, max-age on redirects", duration(func(c *Config) *time.Duration { return &c.RedirectMaxAge }, 0)},
		{"LINKGATE_SHUTDOWN_DELAY", "shutdown-delay", "5s", "on SIGTERM, time /ready answers 503 before the listener stops", duration(func(c *Config) *time.Duration { return &c.ShutdownDelay }, 0)},
		{"LINKGATE_DRAIN_TIMEOUT", "drain-timeout", "20s", "bound on finishing in-flight requests at shutdown", duration(func(c *Config) *time.Duration { return &c.DrainTimeout }, time.Millisecond)},
		{"LINKGATE_LOG_LEVEL", "log-level", "info", "log level: debug, info, warn or error", func(c *Config, v string) error {
			return c.LogLevel.UnmarshalText([]byte(v))
		}},
		{"LINKGATE_READ_TIMEOUT", "read-timeout", "10s", "bound on reading a whole request", duration(func(c *Config) *time.Duration { return &c.ReadTimeout }, time.Millisecond)},
		{"LINKGATE_WRITE_TIMEOUT", "write-timeout", "10s", "bound on writing a response", duration(func(c *Config) *time.Duration { return &c.WriteTimeout }, time.Millisecond)},
		{"LINKGATE_IDLE_TIMEOUT", "idle-timeout", "75s", "keep-alive idle bound (keep nginx's upstream keepalive_timeout below it)", duration(func(c *Config) *time.Duration { return &c.IdleTimeout }, time.Millisecond)},
		{"LINKGATE_CLICK_FLUSH_INTERVAL", "click-flush-interval", "1s", "how often counted clicks are written to the store", duration(func(c *Config) *time.Duration { return &c.ClickFlush }, time.Millisecond)},
		{"LINKGATE_CACHE_SIZE", "cache-size", "100000", "in-process LRU entries", func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return errors.New("must be a whole number >= 1")
			}
			c.CacheSize = n
			return nil
		}},
		{"LINKGATE_CACHE_TTL", "cache-ttl", "5m", "in-process LRU entry lifetime", duration(func(c *Config) *time.Duration { return &c.CacheTTL }, time.Millisecond)},
		{"LINKGATE_REDIS_CACHE_TTL", "redis-cache-ttl", "1h", "Redis cache entry lifetime", duration(func(c *Config) *time.Duration { return &c.RedisCacheTTL }, time.Millisecond)},
		{"LINKGATE_NEGATIVE_TTL", "negative-ttl", "5s", "lifetime of cached 'unknown code' answers", duration(func(c *Config) *time.Duration { return &c.NegativeTTL }, time.Millisecond)},
		{"LINKGATE_REDIS_TIMEOUT", "redis-timeout", "50ms", "bound on every Redis call on the request path", duration(func(c *Config) *time.Duration { return &c.RedisTimeout }, time.Millisecond)},
		{"LINKGATE_STORE_TIMEOUT", "store-timeout", "5s", "bound on every database call; a request whose call runs over gets 503", duration(func(c *Config) *time.Duration { return &c.StoreTimeout }, time.Millisecond)},
	}
}

// Load builds the Config from defaults, then getenv, then args (flags without
// the program name). It returns flag.ErrHelp after printing the usage to out
// when args ask for -h/-help.
func Load(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	table := settings()
	for _, s := range table {
		if err := s.set(c, s.def); err != nil {
			return nil, fmt.Errorf("default of %s: %w", s.env, err) // a bug, not user error
		}
	}
	for _, s := range table {
		if v, ok := lookup(getenv, s.env); ok {
			if err := s.set(c, v); err != nil {
				return nil, fmt.Errorf("invalid %s=%q: %w", s.env, v, err)
			}
		}
	}
	fs := flag.NewFlagSet("linkgate", flag.ContinueOnError)
	fs.SetOutput(out)
	for _, s := range table {
		s := s
		fs.Func(s.flag, fmt.Sprintf("%s (env %s, default %q)", s.usage, s.env, s.def), func(v string) error {
			return s.set(c, v)
		})
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: linkgate [flags]\n       linkgate keys create --name NAME [--admin=true]\n\nEvery flag mirrors an environment variable; flags win.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, nil
}

// lookup returns getenv(name) and whether it is set to something non-empty.
// An empty variable counts as unset, so `LINKGATE_X=` keeps the default.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := strings.TrimSpace(getenv(name))
	return v, v != ""
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func duration(field func(*Config) *time.Duration, min time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		if d < min {
			return fmt.Errorf("must be at least %v", min)
		}
		*field(c) = d
		return nil
	}
}

// policy parses a rate-limit policy named name; failOpen marks the policy that
// allows requests while the shared limiter (Redis) is unavailable.
func policy(name string, failOpen bool, field func(*Config) *ratelimit.Policy) func(*Config, string) error {
	return func(c *Config, v string) error {
		p, err := ratelimit.ParsePolicy(name, v)
		if err != nil {
			return err
		}
		p.FailOpen = failOpen
		*field(c) = p
		return nil
	}
}

// OwnHosts are the hosts a link must not point at: the base URL's host.
func (c *Config) OwnHosts() []string {
	return []string{c.BaseURL.Hostname()}
}
