// Package testenv finds or starts the real servers that integration and
// end-to-end tests talk to: redis-server and PostgreSQL. A server comes from an
// environment variable when one is set, or is started on a free loopback port
// and stopped (by PID) when the test ends.
//
// When neither is possible the test is skipped with a loud reason, except with
// CI=true, where a missing server fails the test instead.
package testenv

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// Environment variables naming servers that tests may use instead of starting
// their own.
const (
	EnvRedisURL    = "LINKGATE_TEST_REDIS_URL"    // e.g. redis://127.0.0.1:6379/0
	EnvPostgresURL = "LINKGATE_TEST_POSTGRES_URL" // e.g. postgres://postgres@127.0.0.1:5432/test
)

// InCI reports whether the tests run under CI (CI=true), where a missing server
// is a failure rather than a skip.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Unavailable stops tb because a required server or tool is missing: a
// failure under CI, a loud skip elsewhere.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("required test dependency missing (CI=true): "+format, args...)
		return
	}
	tb.Skipf("SKIPPED, required test dependency missing: "+format, args...)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every few milliseconds until it returns true or the
// deadline passes, and then fails tb with what. It is the only way tests here
// wait for something to happen: never a bare sleep.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Eventually(timeout, cond) {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Eventually polls cond until it returns true (true) or timeout passes (false).
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialable reports whether a TCP connection to addr succeeds.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
