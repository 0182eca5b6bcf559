package main

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

func TestCtxtSwitches(t *testing.T) {
	status := []byte("Name:\tlinkgate\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n")
	if v, n := ctxtSwitches(status); v != 1234 || n != 56 {
		t.Fatalf("ctxtSwitches = %d, %d; want 1234, 56", v, n)
	}
	if v, n := ctxtSwitches([]byte("Name:\tx\n")); v != 0 || n != 0 {
		t.Fatalf("ctxtSwitches without the fields = %d, %d; want 0, 0", v, n)
	}
}

// groupUsage counts a real process group: a shell that burns CPU and waits
// for a child in turn, so both its CPU time and its voluntary switches (one
// per wait, at least) grow.
func TestGroupUsage(t *testing.T) {
	cmd := exec.Command("sh", "-c", `while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.01; done`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group this test started
		_ = cmd.Wait()
	})
	start := groupUsage(cmd.Process.Pid)
	var u usage
	if !testenv.Eventually(20*time.Second, func() bool {
		u = groupUsage(cmd.Process.Pid)
		return u.CPU-start.CPU >= 50*time.Millisecond && u.Voluntary-start.Voluntary >= 3
	}) {
		t.Fatalf("after 20s: usage %+v from %+v; want 50ms more CPU and 3 more voluntary switches", u, start)
	}
	if u.Involuntary < start.Involuntary {
		t.Fatalf("involuntary switches went back: %d after %d", u.Involuntary, start.Involuntary)
	}
}

// A process group nobody is in uses nothing.
func TestGroupUsageOfNoGroup(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if u := groupUsage(cmd.Process.Pid); u != (usage{}) {
		t.Fatalf("usage of an exited process's group = %+v, want zero", u)
	}
}
