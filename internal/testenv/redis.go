package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server process this test started on a loopback port. It
// keeps nothing on disk.
type Redis struct {
	Port int
	tb   testing.TB
	bin  string // the redis-server executable
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free port and stops it when tb ends. Use
// it when the test must kill or restart Redis; otherwise use RedisURL.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	r := &Redis{Port: FreePort(tb), tb: tb, bin: Tool(tb, "redis-server", "redis-server")}
	r.Start()
	tb.Cleanup(r.Kill)
	return r
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// URL is a redis:// URL of the server's database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start starts the server on its port (again, after Kill) and waits until it
// accepts connections.
func (r *Redis) Start() {
	r.tb.Helper()
	if r.cmd != nil {
		r.tb.Fatalf("redis on %d already running", r.Port)
	}
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", os.TempDir(), "--loglevel", "warning")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		Unavailable(r.tb, "start redis-server: %v", err)
	}
	r.cmd = cmd
	WaitFor(r.tb, 10*time.Second, "redis-server on "+r.Addr(), func() bool { return dialable(r.Addr()) })
}

// Kill stops the server with SIGKILL and waits for it to exit. It is a no-op
// when the server is not running.
func (r *Redis) Kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// RedisURL returns the URL of a Redis server for this test: the one named by
// LINKGATE_TEST_REDIS_URL, or one started for tb. Tests sharing a server must
// namespace their keys; KeyPrefix gives a unique one.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv(EnvRedisURL); u != "" {
		return u
	}
	return StartRedis(tb).URL()
}

// KeyPrefix returns a prefix unique to this test run, for keys in a shared Redis.
func KeyPrefix(tb testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("random prefix: %v", err)
	}
	return fmt.Sprintf("lgtest:%s:", hex.EncodeToString(b[:]))
}
