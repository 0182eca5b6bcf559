package httpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestAccessLogLineIsValidJSON(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a := newAccessLog(&buf, logger)
	weird := "/a\"b\\c\n\r\t\x01<x>&\xff\u2028é"
	e := accessEntry{start: time.Now(), requestID: "id-1", method: "GET", path: weird, route: "/:code", status: 404, bytes: 12, ip: "127.0.0.1"}
	if !a.enabled(e.status) {
		t.Fatal("info disabled")
	}
	a.write(&e)
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
	warn := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a := newAccessLog(&buf, warn)
	if a.enabled(200) || !a.enabled(503) {
		t.Fatal("at warn, 2xx lines must be off and 5xx lines (ERROR) on")
	}
	a.write(&accessEntry{start: time.Now(), status: 503})
	if !strings.Contains(buf.String(), `"level":"ERROR"`) {
		t.Fatalf("5xx line %q", buf.String())
	}
}

func BenchmarkAccessLog(b *testing.B) {
	logger := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil))
	a := newAccessLog(discard{}, logger)
	e := accessEntry{start: time.Now(), requestID: "0123456789ab-1z", method: "GET", path: "/Ab3dE9x", route: "/:code", status: 302, ip: "127.0.0.1"}
	b.ReportAllocs()
	for b.Loop() {
		a.write(&e)
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
