package deploy

import (
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fromImage are the executables tests ask testenv.Tool for that .ci/run does
// not install, because the machine CI runs on has them before it starts.
var fromImage = map[string]string{
	"go":      "the Go toolchain that runs the tests (/usr/local/go, not Debian's golang)",
	"kubectl": "the machine image (Google Cloud SDK's apt source, which Debian's lists lack)",
	"chrt":    "util-linux, an Essential Debian package",
}

// bareOK are the executables tests may run by bare name, without testenv.Tool.
var bareOK = map[string]string{
	"sh":        "dash, Essential",
	"true":      "coreutils, Essential",
	"go":        "the Go toolchain that runs the tests",
	"pg_config": "optional: testenv falls back to /usr/lib/postgresql/*/bin",
}

var (
	// bareCommand is an exec.Command or exec.CommandContext call whose program
	// is a string literal.
	bareCommand = regexp.MustCompile(`\bexec\.(?:Command\(|CommandContext\([^,()]+,)\s*"([^"]+)"`)
	// toolCall is a testenv.Tool call with literal arguments.
	toolCall = regexp.MustCompile(`\btestenv\.Tool\(\s*\w+,\s*"([^"]+)",\s*"([^"]+)"\s*\)`)
	// ciNeed is .ci/run's list of command:package pairs.
	ciNeed = regexp.MustCompile(`(?m)^NEED=\(([^)]*)\)`)
)

// .ci/run installs every Debian package a test needs, so that a fresh machine
// passes CI: every executable a test runs is asked for through testenv.Tool
// (no test looks one up or runs one by bare name itself, but for a few listed
// in bareOK), and each Tool call's package is in .ci/run's
// NEED list with the same command, or the machine image provides it.
// (CI passed on machines where wrk had been installed by hand, while .ci/run
// did not install it: on a fresh one the wrk test failed.)
func TestCIInstallsEveryTool(t *testing.T) {
	t.Parallel()
	m := ciNeed.FindStringSubmatch(string(readRepoFile(t, ".ci/run")))
	if m == nil {
		t.Fatal(".ci/run has no NEED=(...) list")
	}
	need := strings.Fields(m[1])

	root := repoRoot(t)
	type use struct{ name, pkg, file string }
	var uses []use
	bare := 0 // bare-name commands seen, all in bareOK
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if !strings.HasSuffix(path, ".go") || rel == filepath.Join("deploy", "ci_test.go") { // this file names the call it looks for
			return nil
		}
		src := string(readRepoFile(t, rel))
		// Test code: test files and testenv's helpers (tool.go is the one
		// place that may look executables up).
		if strings.HasSuffix(path, "_test.go") || filepath.Dir(rel) == filepath.Join("internal", "testenv") && filepath.Base(rel) != "tool.go" {
			if strings.Contains(src, "exec.LookPath(") {
				t.Errorf("%s: looks up an executable with exec.LookPath; use testenv.Tool, so that .ci/run is checked to install it", rel)
			}
			for _, m := range bareCommand.FindAllStringSubmatch(src, -1) {
				if _, ok := bareOK[m[1]]; !ok {
					t.Errorf("%s: runs %q by bare name; get its path from testenv.Tool, so that .ci/run is checked to install it", rel, m[1])
				}
				bare++
			}
		}
		calls := toolCall.FindAllStringSubmatch(src, -1)
		if n := strings.Count(src, "testenv.Tool("); n != len(calls) {
			t.Errorf("%s: %d testenv.Tool calls, %d with literal name and package (this test reads only those)", rel, n, len(calls))
		}
		for _, c := range calls {
			uses = append(uses, use{c[1], c[2], rel})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bare < 3 { // sh, true, go, pg_config
		t.Fatalf("found %d bare-name commands; the scan is broken", bare)
	}
	if len(uses) < 8 {
		t.Fatalf("found %d testenv.Tool calls; the scan is broken (nginx, chromium, wrk, prometheus... are all asked for)", len(uses))
	}
	for _, u := range uses {
		if _, ok := fromImage[u.name]; ok {
			continue
		}
		if !slices.Contains(need, u.name+":"+u.pkg) {
			t.Errorf("%s needs %s (Debian package %s), which .ci/run does not install: add %s:%s to its NEED list",
				u.file, u.name, u.pkg, u.name, u.pkg)
		}
	}
}
