package testenv

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool returns the path of the executable name that a test runs (nginx, wrk,
// chromium...), looked up on PATH and then in /usr/sbin and /usr/bin, where
// Debian installs it even when PATH lacks those. When it is missing, Tool
// stops tb with Unavailable (a failure under CI=true) naming pkg, the Debian
// package that provides it.
//
// Every test that needs an executable asks for it here (or through this
// package's helpers, which do), with literal arguments: a test in package
// deploy (TestCIInstallsEveryTool) reads these calls from the sources and
// checks that .ci/run installs each pkg, so a fresh CI machine cannot lack
// what a test needs.
func Tool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p
		}
	}
	Unavailable(tb, "%s not found on PATH, in /usr/sbin or /usr/bin (apt-get install %s)", name, pkg)
	return ""
}
