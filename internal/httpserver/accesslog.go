package httpserver

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// accessLog writes one JSON line per request, shaped like the slog JSON
// handler's records ({"time","level","msg":"request",...}) so that both log
// streams parse alike. It is written by hand because slog's generic record
// and attribute handling cost about 14% of the CPU of a redirect (measured
// with pprof under wrk); this encoder appends known fields to a pooled
// buffer and makes one Write per line. Safe for concurrent use when w is
// (each line is a single Write call).
type accessLog struct {
	w      io.Writer
	bufs   sync.Pool
	logger *slog.Logger // for Enabled checks only
	clock  timestamps
}

func newAccessLog(w io.Writer, logger *slog.Logger) *accessLog {
	return &accessLog{w: w, logger: logger, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

type accessEntry struct {
	start  time.Time
	method string
	path   string
	route  string
	status int
	bytes  int
}

// levelFor is the level of the line for a response status.
func levelFor(status int) slog.Level {
	if status >= 500 {
		return slog.LevelError
	}
	return slog.LevelInfo
}

// enabled reports whether a line for status would be written.
func (a *accessLog) enabled(status int) bool {
	return a.w != nil && a.logger.Enabled(context.Background(), levelFor(status))
}

// write logs e with its request ID id, from client address ip; callers check
// enabled first. id and ip are apart from e so that they can live on the
// caller's stack (e's fields escape through the timestamp's time.Location).
func (a *accessLog) write(e *accessEntry, id, ip []byte) {
	level := levelFor(e.status)
	// One monotonic read (time.Since) instead of time.Now's two: the line's
	// time is the start plus the duration, which is the end to within a
	// wall-clock step taken during the request.
	var now time.Time
	var took time.Duration
	if e.start.IsZero() { // no start known (a RequestCtx not from fasthttp's server)
		now = time.Now()
	} else {
		took = time.Since(e.start)
		now = e.start.Add(took)
	}
	bp := a.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"time":"`...)
	b = a.clock.append(b, now)
	b = append(b, `","level":"`...)
	b = append(b, level.String()...)
	b = append(b, `","msg":"request","request_id":`...)
	b = appendJSONString(b, string(id)) // not escaping: no allocation up to 32 bytes (a generated ID's usual size)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.path)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, e.route)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, int64(e.bytes), 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, took.Microseconds())
	b = append(b, `,"ip":`...)
	b = appendJSONString(b, string(ip)) // not escaping: no allocation up to 32 bytes
	b = append(b, "}\n"...)
	_, _ = a.w.Write(b)
	if cap(b) <= 64<<10 { // keep huge lines out of the pool
		*bp = b
		a.bufs.Put(bp)
	}
}

// timestamps formats times as time.RFC3339Nano does, reusing the text up
// to the second from the last call: formatting a whole timestamp was a
// tenth of the line's cost, and every request in a second shares it. Safe
// for concurrent use.
type timestamps struct {
	last atomic.Pointer[secondText]
}

type secondText struct {
	sec  int64          // t.Unix()
	loc  *time.Location // t.Location()
	date []byte         // "2006-01-02T15:04:05"
	zone []byte         // "Z" or "-07:00"
}

// append appends t as t.AppendFormat(b, time.RFC3339Nano) would: the
// fraction of a second without trailing zeros, none when zero.
func (ts *timestamps) append(b []byte, t time.Time) []byte {
	s := ts.last.Load()
	if s == nil || s.sec != t.Unix() || s.loc != t.Location() {
		whole := t.Truncate(time.Second).AppendFormat(nil, time.RFC3339)
		const dateLen = len("2006-01-02T15:04:05")
		if len(whole) < dateLen || whole[4] != '-' || whole[10] != 'T' { // years outside 0000-9999
			return t.AppendFormat(b, time.RFC3339Nano)
		}
		s = &secondText{sec: t.Unix(), loc: t.Location(), date: whole[:dateLen], zone: whole[dateLen:]}
		ts.last.Store(s)
	}
	b = append(b, s.date...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, s.zone...)
}

// appendMillis appends us microseconds as milliseconds, the way
// strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64) does for them
// (shortest form: no trailing zeros, no point for whole milliseconds).
func appendMillis(b []byte, us int64) []byte {
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	if f := us % 1000; f != 0 {
		d := [4]byte{'.', byte('0' + f/100), byte('0' + f/10%10), byte('0' + f%10)}
		n := 4
		for d[n-1] == '0' {
			n--
		}
		b = append(b, d[:n]...)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, and <, >, &
// escaped as slog does (so log viewers rendering HTML stay safe).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
