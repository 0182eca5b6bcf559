package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed redirect.lua
var redirectLua []byte

//go:embed create.lua
var createLua []byte

// resultLua is appended to both scripts: the thread ids and done() hook that
// print the line wrkResult parses.
//
//go:embed result.lua
var resultLua []byte

// wrkResult is what the scripts' done() hook prints. Times are microseconds.
type wrkResult struct {
	DurationUS    int64   `json:"duration_us"`
	Requests      int64   `json:"requests"`
	Bytes         int64   `json:"bytes"`
	ConnectErrors int64   `json:"connect_errors"`
	ReadErrors    int64   `json:"read_errors"`
	WriteErrors   int64   `json:"write_errors"`
	StatusErrors  int64   `json:"status_errors"` // answers with a status above 399
	Timeouts      int64   `json:"timeouts"`
	P50US         int64   `json:"p50_us"`
	P90US         int64   `json:"p90_us"`
	P99US         int64   `json:"p99_us"`
	P999US        int64   `json:"p999_us"`
	MaxUS         int64   `json:"max_us"`
	MeanUS        float64 `json:"mean_us"`
}

// RPS is completed requests per second.
func (r wrkResult) RPS() float64 {
	if r.DurationUS <= 0 {
		return 0
	}
	return float64(r.Requests) / (float64(r.DurationUS) / 1e6)
}

// Errors is every failed request: socket errors, timeouts and 4xx/5xx.
func (r wrkResult) Errors() int64 {
	return r.ConnectErrors + r.ReadErrors + r.WriteErrors + r.StatusErrors + r.Timeouts
}

// parseWrk finds the WRK_RESULT line in wrk's output.
func parseWrk(out []byte) (wrkResult, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "WRK_RESULT "); ok {
			var r wrkResult
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				return wrkResult{}, fmt.Errorf("parse wrk result %q: %w", rest, err)
			}
			if r.Requests == 0 {
				return r, errors.New("wrk completed no request")
			}
			return r, nil
		}
	}
	return wrkResult{}, fmt.Errorf("no WRK_RESULT line in wrk output:\n%s", out)
}

// wrkRun is one wrk invocation.
type wrkRun struct {
	Bin         string
	Script      string   // path of the Lua script
	ScriptArgs  []string // after "--"
	URL         string   // http://127.0.0.1:port
	Threads     int
	Connections int
	Duration    time.Duration // whole seconds, at least 1
	// Batch runs wrk under SCHED_BATCH (chrt -b 0): its threads then never
	// preempt a running task when they wake, only at the end of a slice.
	Batch bool
}

// run executes wrk and returns its result and the CPU time wrk used.
func (w wrkRun) run(ctx context.Context) (wrkResult, time.Duration, error) {
	secs := max(1, int(w.Duration.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	args := []string{
		"-t", strconv.Itoa(w.Threads), "-c", strconv.Itoa(w.Connections),
		"-d", strconv.Itoa(secs) + "s", "--timeout", "2s",
		"-s", w.Script, w.URL,
	}
	if len(w.ScriptArgs) > 0 {
		args = append(append(args, "--"), w.ScriptArgs...)
	}
	bin, argv := w.Bin, args
	if w.Batch {
		bin, argv = "chrt", append([]string{"--batch", "0", w.Bin}, args...)
	}
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out.Bytes())
	}
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	r, err := parseWrk(out.Bytes())
	if err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	return r, cpu, nil
}
