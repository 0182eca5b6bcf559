package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/testenv"
)

// dockerInstruction is one Dockerfile instruction with continuation lines
// joined.
type dockerInstruction struct {
	cmd  string // upper case: FROM, RUN, COPY...
	args string
}

type dockerStage struct {
	base, name string
	instrs     []dockerInstruction
}

// parseDockerfile returns the global ARG defaults and the stages of a
// Dockerfile. It understands what this repository's Dockerfile uses: comments,
// line continuations, FROM ... AS name and ARG defaults.
func parseDockerfile(t *testing.T, src string) (map[string]string, []dockerStage) {
	t.Helper()
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	globals := map[string]string{}
	var stages []dockerStage
	for _, l := range logical {
		cmd, args, _ := strings.Cut(l, " ")
		in := dockerInstruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := dockerStage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			globals[k] = v
		case len(stages) == 0:
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		default:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	if len(stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return globals, stages
}

func (s dockerStage) all(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// execForm decodes a JSON exec-form argument list, after an optional
// leading word such as HEALTHCHECK's "CMD" and any --flags before it.
func execForm(t *testing.T, what, args string) []string {
	t.Helper()
	i := strings.Index(args, "[")
	if i < 0 {
		t.Fatalf("%s %q is not in exec form", what, args)
	}
	var out []string
	if err := json.Unmarshal([]byte(args[i:]), &out); err != nil {
		t.Fatalf("%s %q: %v", what, args, err)
	}
	return out
}

func loadDockerfile(t *testing.T) (map[string]string, []dockerStage) {
	t.Helper()
	return parseDockerfile(t, string(readRepoFile(t, "Dockerfile")))
}

// TestDockerfile checks the build and runtime stages against go.mod and
// docker-compose.yml.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	globals, stages := loadDockerfile(t)
	byName := map[string]dockerStage{}
	for i, s := range stages {
		for _, c := range s.all("COPY") {
			if m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(c); m != nil {
				if _, ok := byName[m[1]]; !ok {
					t.Errorf("stage %d copies from %q, not an earlier stage", i, m[1])
				}
			}
		}
		if s.name != "" {
			byName[s.name] = s
		}
	}

	// Builder: the Go release go.mod asks for, static and reproducible.
	build := stages[0]
	goMod := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(readRepoFile(t, "go.mod")))
	if goMod == nil {
		t.Fatal("go.mod has no go directive")
	}
	base := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(build.base, func(m string) string {
		return globals[strings.Trim(m, "${}")]
	})
	if base != "golang:"+goMod[1] {
		t.Errorf("builder image %s (%s), want golang:%s as go.mod says", build.base, base, goMod[1])
	}
	runs := strings.Join(build.all("RUN"), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "go build", "-o /out/linkgate ./cmd/linkgate", "go mod download"} {
		if !strings.Contains(runs, want) {
			t.Errorf("builder RUN lacks %q", want)
		}
	}

	// Runtime: the last stage, distroless or scratch, non-root.
	final := stages[len(stages)-1]
	if final.base != "gcr.io/distroless/static-debian12:nonroot" && final.base != "scratch" {
		t.Errorf("runtime image %s, want distroless static nonroot or scratch", final.base)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Error("runtime stage sets no USER")
	} else if u, _, _ := strings.Cut(users[len(users)-1], ":"); u == "root" || u == "0" {
		t.Errorf("runtime USER %s is root", users[len(users)-1])
	} else if _, err := strconv.Atoi(u); err != nil {
		t.Errorf("runtime USER %s: use a numeric uid so that runAsNonRoot can verify it", u)
	}
	if !slices.Contains(final.all("COPY"), "--from=build /out/linkgate /linkgate") {
		t.Errorf("runtime stage does not copy the binary to /linkgate: %q", final.all("COPY"))
	}
	if eps := final.all("ENTRYPOINT"); len(eps) != 1 || !slices.Equal(execForm(t, "ENTRYPOINT", eps[0]), []string{"/linkgate"}) {
		t.Errorf("ENTRYPOINT %q, want [\"/linkgate\"]", eps)
	}

	p := loadCompose(t)
	app := appServices(t, p)[0]
	port := appPort(t, p, app)
	if !slices.Contains(final.all("EXPOSE"), port) {
		t.Errorf("runtime stage EXPOSE %q, want %s (LINKGATE_ADDR in compose)", final.all("EXPOSE"), port)
	}
	checkHealthcheck := func(stage dockerStage, service string) {
		hcs := stage.all("HEALTHCHECK")
		if len(hcs) != 1 {
			t.Errorf("stage %q: want one HEALTHCHECK, got %q", stage.name, hcs)
			return
		}
		got := execForm(t, "HEALTHCHECK", hcs[0])
		want := p.Services[service].HealthCheck.Test[1:]
		if !slices.Equal(got, want) {
			t.Errorf("stage %q HEALTHCHECK %q differs from compose %s healthcheck %q", stage.name, got, service, want)
		}
	}
	checkHealthcheck(final, app)

	// Build targets named in compose exist, with the same health check.
	for name, s := range p.Services {
		if s.Build == nil || s.Build.Target == "" {
			continue
		}
		st, ok := byName[s.Build.Target]
		if !ok {
			t.Errorf("compose %s builds target %q, which the Dockerfile lacks", name, s.Build.Target)
			continue
		}
		checkHealthcheck(st, name)
	}
}

// dockerignore is a matcher for .dockerignore patterns as Docker applies
// them: paths relative to the context, * and ? within one path element, **
// across elements, ! to re-include, the last matching pattern wins, and a
// pattern that matches a directory matches everything under it.
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func parseDockerignore(src string) dockerignore {
	var d dockerignore
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		negate := strings.HasPrefix(line, "!")
		line = filepath.ToSlash(filepath.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/")))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		d = append(d, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile(re.String()), negate})
	}
	return d
}

// excludes reports whether path (slash-separated, relative to the context)
// stays out of the build context.
func (d dockerignore) excludes(path string) bool {
	var prefixes []string
	parts := strings.Split(path, "/")
	for i := range parts {
		prefixes = append(prefixes, strings.Join(parts[:i+1], "/"))
	}
	excluded := false
	for _, p := range d {
		for _, pre := range prefixes {
			if p.re.MatchString(pre) {
				excluded = !p.negate
				break
			}
		}
	}
	return excluded
}

func TestDockerignoreMatcher(t *testing.T) {
	t.Parallel()
	d := parseDockerignore("# c\n.git\n**/*_test.go\n*.db\ndocs\n!docs/keep.md\nbin/\n")
	for path, want := range map[string]bool{
		".git/config": true, "a/b/x_test.go": true, "x_test.go": true, "x.go": false, "linkgate.db": true,
		"sub/linkgate.db": false, "docs/a.md": true, "docs/keep.md": false, "bin/linkgate": true, "binary": false,
	} {
		if got := d.excludes(path); got != want {
			t.Errorf("excludes(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestDockerignore: nothing ./cmd/linkgate's build needs is left out of the
// context, and secrets, databases and VCS data are.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	goTool := testenv.Tool(t, "go", "golang")
	root := repoRoot(t)
	d := parseDockerignore(string(readRepoFile(t, ".dockerignore")))

	cmd := exec.Command(goTool, "list", "-deps", "-f",
		`{{if not .Standard}}{{.Dir}}|{{join .GoFiles ","}}|{{join .EmbedFiles ","}}{{end}}`, "./cmd/linkgate")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			continue
		}
		rel, err := filepath.Rel(root, f[0])
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency from the module cache
		}
		for _, names := range f[1:] {
			for _, n := range strings.Split(names, ",") {
				if n != "" {
					needed = append(needed, filepath.ToSlash(filepath.Join(rel, n)))
				}
			}
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, n := range needed {
		if d.excludes(n) {
			t.Errorf(".dockerignore excludes %s, which the build needs", n)
		}
	}
	for _, n := range []string{".git/config", ".env", "linkgate.db", "internal/links/code_test.go", "deploy/k8s/base/deployment.yaml", "bin/linkgate"} {
		if !d.excludes(n) {
			t.Errorf(".dockerignore lets %s into the build context", n)
		}
	}
}

// TestBinaryIsPureGo backs the Dockerfile's CGO_ENABLED=0 build on
// distroless/static (no libc): no package of ./cmd/linkgate outside the
// standard library uses cgo, and with cgo off every package still has files to
// build. (Compiling the binary here would cost minutes on a cold build cache;
// the end-to-end tests build and run it, `linkgate probe` included.)
func TestBinaryIsPureGo(t *testing.T) {
	t.Parallel()
	goTool := testenv.Tool(t, "go", "golang")
	list := func(cgo string) string {
		cmd := exec.Command(goTool, "list", "-e", "-deps", "-f",
			`{{if not .Standard}}{{.ImportPath}}|{{join .CgoFiles ","}}|{{if .Error}}{{.Error}}{{end}}{{end}}`, "./cmd/linkgate")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list (CGO_ENABLED=%s): %v\n%s", cgo, err, out)
		}
		return string(out)
	}
	var pkgs int
	for _, line := range strings.Split(strings.TrimSpace(list("1")), "\n") {
		f := strings.SplitN(line, "|", 3)
		if len(f) != 3 {
			continue
		}
		pkgs++
		if f[1] != "" {
			t.Errorf("%s uses cgo (%s): the static distroless image cannot run it", f[0], f[1])
		}
	}
	if pkgs < 10 {
		t.Fatalf("go list found only %d packages", pkgs)
	}
	for _, line := range strings.Split(strings.TrimSpace(list("0")), "\n") {
		if f := strings.SplitN(line, "|", 3); len(f) == 3 && f[2] != "" {
			t.Errorf("with CGO_ENABLED=0, %s: %s", f[0], f[2])
		}
	}
}
