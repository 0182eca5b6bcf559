package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// shippedNginxConf is the edge configuration, relative to the module root.
const shippedNginxConf = "deploy/nginx/nginx.conf"

// nginxMarkers are the substitution markers of the shipped config (see its
// header comment) and how many lines carry each; -1 means at least one.
var nginxMarkers = map[string]int{
	"# e2e:listen":        1,
	"# e2e:status-listen": 1,
	"# e2e:upstream":      -1,
	"# e2e:path":          6,
}

var nginxUpstreamAddr = regexp.MustCompile(`\bapp[0-9]+:8080\b`)

// renderedNginx is the shipped config prepared for one benchmark target.
type renderedNginx struct {
	Conf string
	// FloodGuardLines are the per-IP limit_req lines removed (see
	// renderShippedNginx).
	FloodGuardLines []string
}

// renderShippedNginx applies the config's documented substitutions (listen
// ports, upstream servers, pid and temp paths under dir), exactly as the
// end-to-end tests do, plus one change of its own: it removes the per-IP
// "limit_req zone=..." lines of the server block. wrk sends every request from
// 127.0.0.1, so the shipped flood guard (100 r/s per IP) would answer nearly
// everything with 429 and the benchmark would measure nginx's 429 page. The
// limit_conn guard stays (200 connections per IP, above the benchmark's).
// Both nginx targets (linkgate and the minimal baseline behind nginx) get the
// same rendering, so their ratio is like for like.
func renderShippedNginx(conf string, port, statusPort int, upstreams []string, dir string) (renderedNginx, error) {
	if len(upstreams) == 0 {
		return renderedNginx{}, errors.New("render nginx.conf: no upstream")
	}
	var out strings.Builder
	var removed []string
	seen := map[string]int{}
	for _, line := range strings.SplitAfter(conf, "\n") {
		body := strings.TrimRight(line, "\n")
		marker := ""
		for m := range nginxMarkers {
			if strings.HasSuffix(body, m) {
				marker = m
			}
		}
		seen[marker]++
		switch marker {
		case "":
			if t := strings.TrimSpace(body); strings.HasPrefix(t, "limit_req ") && strings.Contains(t, "zone=") {
				removed = append(removed, t)
				continue
			}
			out.WriteString(line)
		case "# e2e:listen":
			if !strings.Contains(line, "listen 80;") {
				return renderedNginx{}, fmt.Errorf("render nginx.conf: listen marker on a line without `listen 80;`: %q", body)
			}
			out.WriteString(strings.Replace(line, "listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port), 1))
		case "# e2e:status-listen":
			if !strings.Contains(line, "listen 8081;") {
				return renderedNginx{}, fmt.Errorf("render nginx.conf: status-listen marker on a line without `listen 8081;`: %q", body)
			}
			out.WriteString(strings.Replace(line, "listen 8081;", fmt.Sprintf("listen 127.0.0.1:%d;", statusPort), 1))
		case "# e2e:upstream":
			if !nginxUpstreamAddr.MatchString(line) {
				return renderedNginx{}, fmt.Errorf("render nginx.conf: upstream marker on a line without appN:8080: %q", body)
			}
			if seen[marker] > 1 {
				continue // the first marked line is repeated once per upstream
			}
			for _, addr := range upstreams {
				out.WriteString(nginxUpstreamAddr.ReplaceAllLiteralString(line, addr))
			}
		case "# e2e:path":
			n := strings.NewReplacer("/var/run/", dir+"/", "/var/cache/nginx/", dir+"/").Replace(line)
			if n == line {
				return renderedNginx{}, fmt.Errorf("render nginx.conf: path marker on a line without /var/run/ or /var/cache/nginx/: %q", body)
			}
			out.WriteString(n)
		}
	}
	for m, want := range nginxMarkers {
		if got := seen[m]; (want < 0 && got == 0) || (want >= 0 && got != want) {
			return renderedNginx{}, fmt.Errorf("render nginx.conf: marker %q on %d lines, want %d", m, got, want)
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.Contains(code, "/var/") {
			return renderedNginx{}, fmt.Errorf("render nginx.conf: unsubstituted system path: %q", line)
		}
	}
	return renderedNginx{Conf: out.String(), FloodGuardLines: removed}, nil
}

// returnNginxConf is the loopback ceiling: nginx answering every request
// with a fixed 302 itself, no access log, no upstream.
func returnNginxConf(port int, dir string) string {
	return fmt.Sprintf(`# make bench: nginx "return 302", the loopback ceiling.
worker_processes auto;
pid %[2]s/nginx.pid;
error_log /dev/stderr warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    server_tokens off;
    client_body_temp_path %[2]s/client_temp;
    proxy_temp_path       %[2]s/proxy_temp;
    fastcgi_temp_path     %[2]s/fastcgi_temp;
    uwsgi_temp_path       %[2]s/uwsgi_temp;
    scgi_temp_path        %[2]s/scgi_temp;
    server {
        listen 127.0.0.1:%[1]d;
        location / {
            return 302 https://example.com/bench/ceiling;
        }
    }
}
`, port, dir)
}

// nginxBinary finds nginx.
func nginxBinary() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx not found on PATH or at /usr/sbin/nginx (apt-get install nginx)")
}

// writeNginx writes conf into its own world-readable directory under parent
// (nginx workers drop root privileges) and checks it with nginx -t.
func writeNginx(bin, parent, name, conf string) (dir, confPath string, err error) {
	dir = filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("nginx %s: %w", name, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("nginx %s: %w", name, err)
	}
	confPath = filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", "", fmt.Errorf("nginx %s: %w", name, err)
	}
	if out, err := exec.Command(bin, "-t", "-q", "-p", dir+"/", "-c", confPath).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("nginx %s: nginx -t: %w\n%s", name, err, out)
	}
	return dir, confPath, nil
}
