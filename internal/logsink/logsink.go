// Package logsink is the buffered writer every log line of linkgate goes
// through (slog records and access-log lines alike).
//
// A write system call per line costs more than formatting the line, so lines
// are collected in a buffer and written when it fills, every Interval, and on
// Flush, the way nginx's "access_log ... buffer= flush=" does. The price is
// that a process killed with SIGKILL loses at most the last Interval of log
// lines; a clean exit flushes everything. Each Write must be one whole line:
// the sink serialises Writes, so lines from different goroutines never
// interleave. Safe for concurrent use.
package logsink

import (
	"bufio"
	"context"
	"io"
	"sync"
	"time"
)

// Sink buffers writes to an underlying writer.
type Sink struct {
	mu       sync.Mutex
	w        io.Writer
	buf      *bufio.Writer
	interval time.Duration
}

// New returns a Sink writing to w through a buffer of size bytes (default
// 64 KiB), flushed at least every interval (default 100ms) once Run runs.
func New(w io.Writer, size int, interval time.Duration) *Sink {
	if size <= 0 {
		size = 64 << 10
	}
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	return &Sink{w: w, buf: bufio.NewWriterSize(w, size), interval: interval}
}

// Write buffers p, one whole log line.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.buf.Write(p)
	s.recover(err)
	return n, err
}

// Flush writes out everything buffered.
func (s *Sink) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.buf.Flush()
	s.recover(err)
	return err
}

// recover drops what a failed write left in the buffer: bufio's errors are
// sticky, and one failed write to stdout must not silence logging for good.
// Called with mu held.
func (s *Sink) recover(err error) {
	if err != nil {
		s.buf.Reset(s.w)
	}
}

// Run flushes every interval until ctx is done, then flushes once more.
func (s *Sink) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.Flush()
		case <-t.C:
			_ = s.Flush()
		}
	}
}
