package deploy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// repoRoot is the repository root: the parent of this package's directory,
// which go test makes the working directory.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatalf("working directory: %v", err)
	}
	root := filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		tb.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

// repoFile returns the absolute path of rel (slash-separated, relative to the
// repository root).
func repoFile(tb testing.TB, rel string) string {
	tb.Helper()
	return filepath.Join(repoRoot(tb), filepath.FromSlash(rel))
}

// readRepoFile reads rel from the repository, failing tb if it cannot.
func readRepoFile(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(repoFile(tb, rel))
	if err != nil {
		tb.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// result is what a finished command printed and how it ended.
type result struct {
	out string // stdout and stderr, interleaved
	err error  // nil on exit status 0
}

// run runs a command in dir with a time bound and returns its output and exit
// error. A command that cannot start at all fails tb.
func run(tb testing.TB, dir string, timeout time.Duration, name string, args ...string) result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	if ctx.Err() != nil {
		tb.Fatalf("%s %s: timed out after %v\n%s", name, strings.Join(args, " "), timeout, buf.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		tb.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return result{out: buf.String(), err: err}
}

// mustRun is run that fails tb unless the command exits 0.
func mustRun(tb testing.TB, dir string, timeout time.Duration, name string, args ...string) string {
	tb.Helper()
	r := run(tb, dir, timeout, name, args...)
	if r.err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), r.err, r.out)
	}
	return r.out
}

// yamlStrict decodes YAML into v, rejecting fields v does not declare and
// duplicate keys.
func yamlStrict(tb testing.TB, what string, data []byte, v any) {
	tb.Helper()
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		tb.Fatalf("decode %s strictly: %v", what, err)
	}
}

// writeFile writes data to path, creating parent directories.
func writeFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatalf("mkdir for %s: %v", path, err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatalf("write %s: %v", path, err)
	}
}

// copyTree copies the regular files under src to dst.
func copyTree(tb testing.TB, src, dst string) {
	tb.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		tb.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// nginxUpstreamKeepalive returns keepalive_timeout of the linkgate upstream
// block in deploy/nginx/nginx.conf: how long nginx keeps an unused
// connection to an instance (nginx's default, 60 s, when unset).
func nginxUpstreamKeepalive(tb testing.TB) time.Duration {
	tb.Helper()
	conf := string(readRepoFile(tb, "deploy/nginx/nginx.conf"))
	_, block, ok := strings.Cut(conf, "upstream linkgate {")
	if !ok {
		tb.Fatal("nginx.conf has no upstream linkgate block")
	}
	block, _, _ = strings.Cut(block, "}")
	for _, line := range strings.Split(block, "\n") {
		f := strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), ";"))
		if len(f) != 2 || f[0] != "keepalive_timeout" {
			continue
		}
		v := f[1]
		if strings.Trim(v, "0123456789") == "" {
			v += "s" // nginx reads a bare number as seconds
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			tb.Fatalf("nginx.conf upstream keepalive_timeout %q: %v", f[1], err)
		}
		return d
	}
	return 60 * time.Second
}
