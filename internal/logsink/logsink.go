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
//
// The write system call happens outside the lock that Writes take: a full
// buffer is swapped for a spare one and written while other goroutines go
// on appending to the new one, so a request never waits for the disk or the
// pipe unless a whole buffer fills during one write. Buffers are written in
// the order they filled. (bufio.Writer under a mutex, the first version,
// held every logging goroutine for the length of the system call.)
package logsink

import (
	"context"
	"io"
	"sync"
	"time"
)

// Sink buffers writes to an underlying writer.
type Sink struct {
	mu    sync.Mutex // guards buf and spare
	buf   []byte     // lines not yet handed to w
	spare []byte     // an empty buffer to swap in; nil while both are in use
	size  int

	out sync.Mutex // serialises writes to w; taken under mu, so in buffer order
	w   io.Writer
	err error // the first failed write since the last Flush; guarded by out

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
	return &Sink{w: w, size: size, buf: make([]byte, 0, size), interval: interval}
}

// Write buffers p, one whole log line. When the buffer is full, the lines
// in it are written to w first (outside the buffer's lock); a line longer
// than the buffer is written on its own. An error writing those lines is
// returned, here or by the next Flush, and the lines are dropped: one
// failed write to stdout must not silence logging for good.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	if len(s.buf)+len(p) <= s.size {
		s.buf = append(s.buf, p...)
		s.mu.Unlock()
		return len(p), nil
	}
	full := s.buf
	s.buf = s.fresh()
	var long []byte
	if len(p) > s.size {
		long = p
	} else {
		s.buf = append(s.buf, p...)
	}
	err := s.writeOut(full, long)
	if err != nil && long != nil {
		return 0, err
	}
	return len(p), err
}

// Flush writes out everything buffered, after any write in progress, and
// returns the first write error since the last Flush.
func (s *Sink) Flush() error {
	s.mu.Lock()
	var full []byte
	if len(s.buf) > 0 {
		full, s.buf = s.buf, s.fresh()
	}
	return s.writeOut(full, nil)
}

// writeOut writes full (a buffer swapped out of s.buf, or nil) and then long
// to w, after the writes of earlier calls, keeps full as the spare buffer,
// and returns the first write error since the last one returned. Called
// with mu held; releases it before writing.
func (s *Sink) writeOut(full, long []byte) error {
	s.out.Lock()
	s.mu.Unlock()
	s.write(full)
	s.write(long)
	err := s.err
	s.err = nil
	s.out.Unlock()
	if full != nil {
		s.recycle(full)
	}
	return err
}

// write writes b to w, keeping the first error. Called with out held.
func (s *Sink) write(b []byte) {
	if len(b) == 0 {
		return
	}
	if _, err := s.w.Write(b); err != nil && s.err == nil {
		s.err = err
	}
}

// fresh returns an empty buffer: the spare one, or a new one. Called with
// mu held.
func (s *Sink) fresh() []byte {
	if b := s.spare; b != nil {
		s.spare = nil
		return b
	}
	return make([]byte, 0, s.size)
}

// recycle keeps b, written out, as the spare buffer.
func (s *Sink) recycle(b []byte) {
	s.mu.Lock()
	if s.spare == nil && cap(b) <= 2*s.size {
		s.spare = b[:0]
	}
	s.mu.Unlock()
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
