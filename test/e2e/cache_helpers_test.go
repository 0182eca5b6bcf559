package e2e

// Helpers for the cache end-to-end tests (cache_*_test.go): a private
// Redis with a MONITOR connection that counts the commands linkgate sends,
// INFO counters, and percentiles.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/testenv"
)

// cacheEnv is the environment every cache test instance gets on top of the
// harness's: no rate limiting (the load and the 50 invalidation rounds
// would exceed the default policies, and a limiter on Redis would add
// commands to the counts), plus extra.
func cacheEnv(extra ...string) []string {
	return append([]string{
		"LINKGATE_RATELIMIT_REDIRECT=off",
		"LINKGATE_RATELIMIT_CREATE=off",
		"LINKGATE_RATELIMIT_API=off",
	}, extra...)
}

// cachePair starts two linkgate instances sharing one fresh PostgreSQL
// database and the given Redis.
func cachePair(t *testing.T, r *testenv.Redis, extra ...string) (a, b *server) {
	t.Helper()
	db := testenv.PostgresURL(t)
	env := cacheEnv(append([]string{"LINKGATE_REDIS_URL=" + r.URL()}, extra...)...)
	return startServer(t, db, env...), startServer(t, db, env...)
}

// cacheRedisClient is a go-redis client for the test's own queries, closed when
// t ends.
func cacheRedisClient(t *testing.T, r *testenv.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

// cacheRedisStat returns one integer field of INFO stats (keyspace_hits, ...).
func cacheRedisStat(t *testing.T, c *redis.Client, field string) int64 {
	t.Helper()
	n, err := cacheRedisStatErr(c, field)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func cacheRedisStatErr(c *redis.Client, field string) (int64, error) {
	info, err := c.Info(context.Background(), "stats").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO stats: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("INFO stats %s: %q", field, v)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("INFO stats has no %s:\n%s", field, info)
}

// cacheAlias returns a valid custom code starting with prefix.
func cacheAlias(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// cacheCmd is one command seen by MONITOR: who sent it ("lua" for a
// command a script ran, else the client's address) and its arguments, the
// command name first.
type cacheCmd struct {
	source string
	args   []string
}

// is reports whether the command is name (any case) and its first key is key.
func (c cacheCmd) is(name, key string) bool {
	return len(c.args) >= 2 && strings.EqualFold(c.args[0], name) && c.args[1] == key
}

// cacheMonitor records every command a Redis server executes, through a
// MONITOR connection. It is only for a private server (testenv.StartRedis).
type cacheMonitor struct {
	t      *testing.T
	rdb    *redis.Client
	conn   net.Conn
	done   chan struct{}
	mu     sync.Mutex
	cmds   []cacheCmd
	err    error
	marker int
}

// startCacheMonitor opens a MONITOR connection to r; commands are recorded from
// the moment it returns.
func startCacheMonitor(t *testing.T, r *testenv.Redis) *cacheMonitor {
	t.Helper()
	conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dial redis for MONITOR: %v", err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatalf("MONITOR: %v", err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("MONITOR answered %q, %v", line, err)
	}
	_ = conn.SetDeadline(time.Time{})
	m := &cacheMonitor{t: t, rdb: cacheRedisClient(t, r), conn: conn, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
				return
			}
			if c, ok := cacheParseMonitorLine(line); ok {
				m.mu.Lock()
				m.cmds = append(m.cmds, c)
				m.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-m.done })
	return m
}

// sync waits until MONITOR has shown every command Redis executed before the
// call: it sends a unique ECHO and waits for it (MONITOR keeps the order).
func (m *cacheMonitor) sync() {
	m.t.Helper()
	m.marker++
	marker := fmt.Sprintf("lgtest-marker-%d", m.marker)
	if err := m.rdb.Echo(context.Background(), marker).Err(); err != nil {
		m.t.Fatalf("ECHO marker: %v", err)
	}
	testenv.WaitFor(m.t, 5*time.Second, "MONITOR to show "+marker, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.err != nil {
			m.t.Fatalf("MONITOR connection: %v", m.err)
		}
		for i := len(m.cmds) - 1; i >= 0; i-- {
			if m.cmds[i].is("echo", marker) {
				return true
			}
		}
		return false
	})
}

// count returns how many recorded commands satisfy match. Call sync first.
func (m *cacheMonitor) count(match func(cacheCmd) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.cmds {
		if match(c) {
			n++
		}
	}
	return n
}

// mgets counts MGETs of code's cached value (one per L2 lookup).
func (m *cacheMonitor) mgets(code string) int {
	return m.count(func(c cacheCmd) bool { return c.is("mget", "lg:link:"+code) })
}

// fills counts the SETs of code's cached value that the fill script made:
// one per store read that was written back to Redis.
func (m *cacheMonitor) fills(code string) int {
	return m.count(func(c cacheCmd) bool { return c.source == "lua" && c.is("set", "lg:link:"+code) })
}

// cacheParseMonitorLine parses `+1700000000.123456 [0 127.0.0.1:5555] "mget" "k"`.
func cacheParseMonitorLine(line string) (cacheCmd, bool) {
	line = strings.TrimRight(strings.TrimPrefix(line, "+"), "\r\n")
	open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return cacheCmd{}, false
	}
	_, source, _ := strings.Cut(line[open+1:end], " ")
	var args []string
	rest := line[end+1:]
	for {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" || rest[0] != '"' {
			break
		}
		var sb strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] != '\\' || i+1 >= len(rest) {
				sb.WriteByte(rest[i])
				continue
			}
			i++
			switch rest[i] {
			case 'n':
				sb.WriteByte('\n')
			case 'r':
				sb.WriteByte('\r')
			case 't':
				sb.WriteByte('\t')
			case 'x':
				if i+2 < len(rest) {
					if v, err := strconv.ParseUint(rest[i+1:i+3], 16, 8); err == nil {
						sb.WriteByte(byte(v))
						i += 2
						continue
					}
				}
				sb.WriteByte('x')
			default:
				sb.WriteByte(rest[i])
			}
		}
		args = append(args, sb.String())
		if i >= len(rest) {
			break
		}
		rest = rest[i+1:]
	}
	return cacheCmd{source: source, args: args}, len(args) > 0
}

// cacheResolveIntoL1 GETs code on s until one 302 to want was answered from s's
// LRU, that is without an L2 lookup (an MGET) in Redis. The first GET loads
// the link; a later one may reload it once if an invalidation published
// before (the create's) evicted it while the first load ran.
func cacheResolveIntoL1(t *testing.T, s *server, m *cacheMonitor, code, want string) {
	t.Helper()
	for i := 0; i < 10; i++ {
		m.sync()
		before := m.mgets(code)
		r := do(t, "GET", s.URL+"/"+code, nil)
		if r.Status != http.StatusFound || r.Header.Get("Location") != want {
			t.Fatalf("GET /%s on %s: %d Location %q, want 302 to %s", code, s.URL, r.Status, r.Header.Get("Location"), want)
		}
		m.sync()
		if m.mgets(code) == before {
			return
		}
	}
	t.Fatalf("GET /%s on %s never answered from the LRU in 10 tries", code, s.URL)
}

// cacheCounters returns linkgate_cache_requests_total of s's /metrics as
// "layer/result" → value.
func cacheCounters(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	r := do(t, "GET", s.URL+"/metrics", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("/metrics on %s: %d", s.URL, r.Status)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(r.Body), "\n") {
		labels, ok := strings.CutPrefix(line, "linkgate_cache_requests_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(labels, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if !ok || err != nil {
			t.Fatalf("/metrics on %s: bad sample %q", s.URL, line)
		}
		var layer, result string
		for _, kv := range strings.Split(labels, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "layer":
				layer = strings.Trim(val, `"`)
			case "result":
				result = strings.Trim(val, `"`)
			}
		}
		out[layer+"/"+result] = v
	}
	if len(out) == 0 {
		t.Fatalf("/metrics on %s has no linkgate_cache_requests_total", s.URL)
	}
	return out
}

// cachePercentile returns the nearest-rank p-th cachePercentile (0 < p <= 1) of d,
// which it sorts.
func cachePercentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d))*p+0.999999) - 1
	return d[min(max(i, 0), len(d)-1)]
}
