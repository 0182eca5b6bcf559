package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// wrkPolicyLua records, from inside wrk's first thread, the scheduling
// policy field of /proc/thread-self/stat (0 SCHED_OTHER, 3 SCHED_BATCH) in
// the file named by the script's argument.
const wrkPolicyLua = `
local out
function init(args) out = args[1] end
local written = false
function request()
  if not written then
    written = true
    local f = io.open("/proc/thread-self/stat")
    local stat = f:read("*a")
    f:close()
    local g = io.open(out .. "." .. tostring(thread_id), "w")
    g:write(stat)
    g:close()
  end
  return wrk.format("GET", "/")
end
`

// A -wrk-batch run really puts wrk's threads under SCHED_BATCH, and an
// ordinary run does not.
func TestWrkRunBatch(t *testing.T) {
	bin := testenv.Tool(t, "wrk", "wrk")
	testenv.Tool(t, "chrt", "util-linux")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	script := filepath.Join(dir, "policy.lua")
	if err := os.WriteFile(script, []byte(wrkPolicyLua+"\n"+string(resultLua)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		batch  bool
		policy string
	}{{false, "0"}, {true, "3"}} {
		out := filepath.Join(dir, "policy-"+map[bool]string{false: "normal", true: "batch"}[tc.batch])
		res, _, err := wrkRun{Bin: bin, Script: script, ScriptArgs: []string{out}, URL: srv.URL,
			Threads: 1, Connections: 1, Duration: time.Second, Batch: tc.batch}.run(context.Background())
		if err != nil {
			t.Fatalf("batch=%v: %v", tc.batch, err)
		}
		if res.Requests == 0 {
			t.Fatalf("batch=%v: no requests", tc.batch)
		}
		b, err := os.ReadFile(out + ".1")
		if err != nil {
			t.Fatalf("batch=%v: the script wrote no policy: %v", tc.batch, err)
		}
		f, ok := statFields(b)
		// After "pid (comm)", policy is field 41 of proc(5), index 38 here.
		if !ok || len(f) < 39 {
			t.Fatalf("batch=%v: short stat %q", tc.batch, b)
		}
		if f[38] != tc.policy {
			t.Errorf("batch=%v: wrk thread policy %s, want %s (stat %s)", tc.batch, f[38], tc.policy, strings.TrimSpace(string(b)))
		}
	}
}
