package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on
// every Linux this runs on; reading it needs sysconf, which needs cgo).
const clockTicks = 100

// proc is one process the harness started, in its own process group (so
// nginx's workers can be counted and stopped with their master). It is
// stopped by its PID (the group's id) and nothing else.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string // its stdout, or "" when discarded
	done    chan struct{}
	waitErr error
}

// pid is the process id, which is also its process group id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// supervisor starts processes and stops every one of them, newest first.
// Its methods are safe for concurrent use.
type supervisor struct {
	dir string // where stdout/stderr files go
	mu  sync.Mutex
	all []*proc
}

// start runs bin with args and env in its own process group. stdout goes to
// dir/name.out (or /dev/null when discardStdout), stderr to dir/name.err.
func (s *supervisor) start(name, bin string, args, env []string, discardStdout bool) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	var stdout *os.File
	var err error
	if discardStdout {
		stdout, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	} else {
		p.logPath = filepath.Join(s.dir, name+".out")
		// O_APPEND: the harness truncates the file between runs while the
		// process keeps writing at the (new) end.
		stdout, err = os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(s.dir, name+".err"))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer stderr.Close()

	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Own process group; killed if the harness dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.all = append(s.all, p)
	s.mu.Unlock()
	return p, nil
}

// stop ends p: SIGTERM to its process group, SIGKILL after grace. It returns
// once the process has been reaped.
func (s *supervisor) stop(p *proc, grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
	// Workers of a group whose leader exited (nginx) get a last SIGKILL.
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
}

// stopAll stops every process started, newest first.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	all := append([]*proc(nil), s.all...)
	s.mu.Unlock()
	for i := len(all) - 1; i >= 0; i-- {
		s.stop(all[i], 10*time.Second)
	}
}

// stderrTail is the end of p's stderr file, for error messages.
func (s *supervisor) stderrTail(p *proc) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, p.name+".err"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// waitUntil polls ok every 50 ms until it returns true, p exits, or timeout
// passes.
func waitUntil(ctx context.Context, p *proc, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s: process %s exited: %v", what, p.name, p.waitErr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready within %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialable reports whether addr accepts TCP connections.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// usage is what the live processes of one process group have used so far.
type usage struct {
	CPU time.Duration // user + system time
	// Voluntary and Involuntary are context switches summed over every
	// thread: a thread that blocked (a futex, epoll_wait, a full socket), and
	// a runnable thread the kernel took the CPU from (a woken task, here
	// often wrk, preempting it; or its time slice ending).
	Voluntary, Involuntary int64
}

// groupUsage reads the usage of the live processes of process group pgid.
// What processes or threads that already exited used is lost, which does not
// matter for servers that run throughout.
func groupUsage(pgid int) usage {
	var u usage
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return u
	}
	var ticks int64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		dir := "/proc/" + e.Name()
		b, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue
		}
		f, ok := statFields(b)
		if !ok || len(f) < 13 {
			continue
		}
		// After "pid (comm)": state ppid pgrp session tty_nr tpgid flags
		// minflt cminflt majflt cmajflt utime stime ...
		if g, _ := strconv.Atoi(f[2]); g != pgid {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + st
		tasks, _ := os.ReadDir(dir + "/task")
		for _, t := range tasks {
			b, err := os.ReadFile(dir + "/task/" + t.Name() + "/status")
			if err != nil {
				continue
			}
			v, n := ctxtSwitches(b)
			u.Voluntary += v
			u.Involuntary += n
		}
	}
	u.CPU = time.Duration(ticks) * time.Second / clockTicks
	return u
}

// ctxtSwitches reads the two context switch counts of a /proc/.../status
// file.
func ctxtSwitches(status []byte) (voluntary, involuntary int64) {
	for line := range bytes.Lines(status) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch string(k) {
		case "voluntary_ctxt_switches":
			voluntary, _ = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		case "nonvoluntary_ctxt_switches":
			involuntary, _ = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return voluntary, involuntary
}

// statFields splits /proc/PID/stat after the command name, which may hold
// spaces and parentheses.
func statFields(b []byte) ([]string, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil, false
	}
	return strings.Fields(string(b[i+2:])), true
}

// machineCPU returns busy and total time of all CPUs from /proc/stat.
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var sum, idle int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		sum += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return time.Duration(sum-idle) * time.Second / clockTicks, time.Duration(sum) * time.Second / clockTicks
}

// rssBytes is VmRSS of pid.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("read rss: odd VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read rss: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("read rss: no VmRSS in /proc/PID/status")
}

// countLines counts newline characters in the file at path (0 when missing).
func countLines(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err != nil {
			return n
		}
	}
}
