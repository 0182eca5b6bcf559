package httpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

// levelLogger is a logger that enables level and above and writes nowhere:
// the access log asks it only whether a line is enabled.
func levelLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))
}

func TestAccessLogLineIsValidJSON(t *testing.T) {
	var buf bytes.Buffer
	logger := levelLogger(slog.LevelInfo)
	a := newAccessLog(&buf, logger)
	weird := "/a\"b\\c\n\r\t\x01<x>&\xff\u2028é"
	e := accessEntry{start: time.Now(), method: "GET", path: weird, route: "/:code", status: 404, bytes: 12}
	if !a.enabled(e.status) {
		t.Fatal("info disabled")
	}
	a.write(&e, []byte("id-1"), []byte("127.0.0.1"))
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("line %q is not JSON: %v", buf.String(), err)
	}
	if m["path"] != strings.ToValidUTF8(weird, "\ufffd") || m["status"] != float64(404) || m["level"] != "INFO" ||
		m["msg"] != "request" || m["route"] != "/:code" || m["request_id"] != "id-1" || m["ip"] != "127.0.0.1" {
		t.Fatalf("decoded %v", m)
	}
	if strings.Count(buf.String(), "\n") != 1 || !strings.HasSuffix(buf.String(), "}\n") {
		t.Fatalf("not one line: %q", buf.String())
	}
}

func TestAccessLogFollowsLevel(t *testing.T) {
	var buf bytes.Buffer
	warn := levelLogger(slog.LevelWarn)
	a := newAccessLog(&buf, warn)
	if a.enabled(200) || !a.enabled(503) {
		t.Fatal("at warn, 2xx lines must be off and 5xx lines (ERROR) on")
	}
	a.write(&accessEntry{start: time.Now(), status: 503}, nil, nil)
	if !strings.Contains(buf.String(), `"level":"ERROR"`) {
		t.Fatalf("5xx line %q", buf.String())
	}
}

func BenchmarkAccessLog(b *testing.B) {
	logger := levelLogger(slog.LevelInfo)
	a := newAccessLog(discard{}, logger)
	e := accessEntry{start: time.Now(), method: "GET", path: "/Ab3dE9x", route: "/:code", status: 302}
	b.ReportAllocs()
	for b.Loop() {
		a.write(&e, []byte("0123456789ab-1z"), []byte("127.0.0.1"))
	}
}

func BenchmarkSlogAccessLine(b *testing.B) {
	logger := slog.New(slog.NewJSONHandler(discard{}, nil))
	b.ReportAllocs()
	for b.Loop() {
		logger.LogAttrs(context.Background(), slog.LevelInfo, "request", slog.String("request_id", "0123456789ab-1z"), slog.String("method", "GET"),
			slog.String("path", "/Ab3dE9x"), slog.String("route", "/:code"), slog.Int("status", 302), slog.Int("bytes", 0),
			slog.Float64("duration_ms", 0.123), slog.String("ip", "127.0.0.1"))
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestTimestampsMatchRFC3339Nano: the cached formatter writes what
// time.RFC3339Nano does, across seconds, zones and fractions with trailing
// zeros, and when called again within the same second.
func TestTimestampsMatchRFC3339Nano(t *testing.T) {
	var ts timestamps
	zones := []*time.Location{time.UTC, time.FixedZone("", -7*3600), time.FixedZone("", 5*3600+30*60), time.Local}
	base := time.Date(2026, 11, 22, 23, 59, 58, 0, time.UTC)
	fracs := []int{0, 1, 10, 100_000, 120_000_000, 123_456_789, 999_999_999, 500_000_000}
	for _, loc := range zones {
		for s := range 3 {
			for _, ns := range fracs {
				tm := base.Add(time.Duration(s)*time.Second + time.Duration(ns)).In(loc)
				for range 2 { // the second call uses the cached second
					if got, want := string(ts.append(nil, tm)), tm.Format(time.RFC3339Nano); got != want {
						t.Fatalf("%v: %q, want %q", tm, got, want)
					}
				}
			}
		}
	}
	if got, want := string(ts.append([]byte("x"), time.Date(12345, 1, 2, 3, 4, 5, 6, time.UTC))), "x"+time.Date(12345, 1, 2, 3, 4, 5, 6, time.UTC).Format(time.RFC3339Nano); got != want {
		t.Fatalf("year 12345: %q, want %q", got, want)
	}
}

// TestAppendMillisMatchesShortestFloat: durations in milliseconds read as
// strconv's shortest float formatting of µs/1000 would.
func TestAppendMillisMatchesShortestFloat(t *testing.T) {
	for _, us := range []int64{0, 1, 9, 10, 100, 999, 1000, 1001, 1010, 1100, 12345, 123456789, -5, -1500} {
		if got, want := string(appendMillis(nil, us)), strconv.FormatFloat(float64(us)/1000, 'f', -1, 64); got != want {
			t.Fatalf("%d µs: %q, want %q", us, got, want)
		}
	}
}
