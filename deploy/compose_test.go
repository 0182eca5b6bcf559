package deploy

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/linkgate/linkgate/internal/clicks"
	"github.com/linkgate/linkgate/internal/config"
	"github.com/linkgate/linkgate/internal/quiesce"
)

// loadCompose loads docker-compose.yml with compose-go as `docker compose`
// would: schema validation, interpolation with an empty environment (so the
// documented defaults apply), normalisation and the consistency checks
// (unknown networks, volumes, depends_on targets...).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("linkgate", true)
	})
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

// appServices returns the names of the services that run the linkgate image:
// those built from the repository's Dockerfile without a build target.
func appServices(t *testing.T, p *types.Project) []string {
	t.Helper()
	var out []string
	for name, s := range p.Services {
		if s.Build != nil && s.Build.Target == "" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatal("docker-compose.yml has no service built from the Dockerfile")
	}
	return out
}

// appEnv returns a service's environment as a getenv function.
func appEnv(s types.ServiceConfig) func(string) string {
	return func(k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
}

// appPort is the port an app service listens on, from its LINKGATE_ADDR.
func appPort(t *testing.T, p *types.Project, name string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(appEnv(p.Services[name])("LINKGATE_ADDR"))
	if err != nil {
		t.Fatalf("%s: LINKGATE_ADDR: %v", name, err)
	}
	return port
}

// knownSettings returns every LINKGATE_* variable internal/config reads, from
// its usage text.
func knownSettings(t *testing.T) map[string]bool {
	t.Helper()
	var usage bytes.Buffer
	if _, err := config.Load([]string{"-h"}, func(string) string { return "" }, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("config.Load -h: %v", err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`\benv (LINKGATE_[A-Z0-9_]+)`).FindAllStringSubmatch(usage.String(), -1) {
		out[m[1]] = true
	}
	if len(out) < 10 {
		t.Fatalf("found only %d settings in config's usage text:\n%s", len(out), usage.String())
	}
	return out
}

// checkSettings loads env through internal/config, as linkgate does at start,
// and reports unknown LINKGATE_* names.
func checkSettings(t *testing.T, what string, env map[string]string) *config.Config {
	t.Helper()
	known := knownSettings(t)
	for k := range env {
		if strings.HasPrefix(k, "LINKGATE_") && !known[k] {
			t.Errorf("%s sets %s, which linkgate does not read", what, k)
		}
	}
	cfg, err := config.Load(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("%s: linkgate would refuse these settings: %v", what, err)
	}
	return cfg
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	want := []string{"app1", "app2", "grafana", "nginx", "nginx-exporter", "postgres", "prometheus", "redis", "redis-exporter"}
	got := p.ServiceNames()
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("services = %v, want %v", got, want)
	}
	if apps := appServices(t, p); !slices.Equal(apps, []string{"app1", "app2"}) {
		t.Errorf("app services = %v, want [app1 app2]", apps)
	}
	if img := p.Services["nginx"].Image; img != "nginx:1.27-alpine" {
		t.Errorf("nginx image %q, want nginx:1.27-alpine", img)
	}
	published := map[string]bool{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if port.HostIP == "" || port.HostIP == "0.0.0.0" {
				published[name] = true
			}
		}
	}
	if !published["nginx"] || len(published) != 1 {
		t.Errorf("services published on every interface: %v; only nginx should be", keys(published))
	}
	var nginxPort bool
	for _, port := range p.Services["nginx"].Ports {
		nginxPort = nginxPort || (port.Published == "8080" && port.Target == 80)
	}
	if !nginxPort {
		t.Errorf("nginx ports %+v, want 8080:80", p.Services["nginx"].Ports)
	}
}

// TestComposeHealthchecks: every service has a real health check, and every
// dependency waits for health.
func TestComposeHealthchecks(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	for name, s := range p.Services {
		hc := s.HealthCheck
		switch {
		case hc == nil:
			t.Errorf("%s has no healthcheck", name)
			continue
		case hc.Disable:
			t.Errorf("%s disables its healthcheck", name)
			continue
		case len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL"):
			t.Errorf("%s healthcheck test %q is neither CMD nor CMD-SHELL", name, hc.Test)
		}
		if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil {
			t.Errorf("%s healthcheck leaves interval, timeout or retries to defaults", name)
		}
		for dep, d := range s.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s depends on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
		}
	}
	for _, app := range appServices(t, p) {
		deps := p.Services[app].DependsOn
		for _, need := range []string{"redis", "postgres"} {
			if d, ok := deps[need]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for %s to be healthy", app, need)
			}
		}
		if d, ok := p.Services["nginx"].DependsOn[app]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("nginx does not wait for %s to be healthy", app)
		}
		want := []string{"CMD", "/linkgate", "probe", "http://127.0.0.1:" + appPort(t, p, app) + "/ready"}
		if got := p.Services[app].HealthCheck.Test; !slices.Equal(got, want) {
			t.Errorf("%s healthcheck %q, want %q", app, got, want)
		}
	}
	for _, pair := range [][2]string{{"nginx-exporter", "nginx"}, {"redis-exporter", "redis"}, {"grafana", "prometheus"}} {
		if _, ok := p.Services[pair[0]].DependsOn[pair[1]]; !ok {
			t.Errorf("%s does not depend on %s", pair[0], pair[1])
		}
	}
}

// TestComposeMounts: every bind-mounted file or folder exists (no Docker
// engine silently creating an empty directory in its place), read-only, and
// the mounts the stack relies on are there.
func TestComposeMounts(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	root := repoRoot(t)
	binds := map[string]string{} // service:target -> repo-relative source
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			rel, err := filepath.Rel(root, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s mounts %s from outside the repository", name, v.Source)
				continue
			}
			rel = filepath.ToSlash(rel)
			binds[name+":"+v.Target] = rel
			if !v.ReadOnly {
				t.Errorf("%s mounts %s read-write", name, rel)
			}
			if v.Bind == nil || v.Bind.CreateHostPath {
				t.Errorf("%s mount of %s may create a missing source (set bind.create_host_path: false)", name, rel)
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", name, rel, err)
			}
		}
	}
	for key, want := range map[string]string{
		"nginx:/etc/nginx/nginx.conf":                  "deploy/nginx/nginx.conf",
		"prometheus:/etc/prometheus/prometheus.yml":    "prometheus.yml",
		"prometheus:/etc/prometheus/deploy/prometheus": "deploy/prometheus",
		"grafana:/etc/grafana/provisioning":            "deploy/grafana/provisioning",
		"grafana:/etc/grafana/dashboards":              "deploy/grafana/dashboards",
	} {
		if got := binds[key]; got != want {
			t.Errorf("bind %s comes from %q, want %q", key, got, want)
		}
	}
	// nginx's health check and the exporter read stub_status on port 8081.
	if b, err := os.ReadFile(filepath.Join(root, "deploy/nginx/nginx.conf")); err == nil {
		conf := string(b)
		if !strings.Contains(conf, "stub_status") || !regexp.MustCompile(`listen\s+[^;]*\b8081\b`).MatchString(conf) {
			t.Error("deploy/nginx/nginx.conf must serve stub_status on a listener on port 8081 (compose health check and nginx-exporter use http://nginx:8081/stub_status)")
		}
		// Its upstream servers are exactly the app services, on their port.
		var got, want []string
		for _, m := range regexp.MustCompile(`(?m)^\s*server\s+([\w.-]+:\d+)`).FindAllStringSubmatch(conf, -1) {
			got = append(got, m[1])
		}
		for _, app := range appServices(t, p) {
			want = append(want, app+":"+appPort(t, p, app))
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("nginx.conf upstream servers %v, want the compose app services %v", got, want)
		}
	}
}

// TestComposeAppSettings loads each app's environment through internal/config
// and checks what the stack depends on: the addresses of Redis and
// PostgreSQL, the instance count, the trusted proxy and the stop grace period.
func TestComposeAppSettings(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	apps := appServices(t, p)
	var nginxIP string
	for _, n := range p.Services["nginx"].Networks {
		if n != nil && n.Ipv4Address != "" {
			nginxIP = n.Ipv4Address
		}
	}
	if nginxIP == "" {
		t.Fatal("nginx has no fixed ipv4_address for the apps to trust")
	}
	for _, app := range apps {
		s := p.Services[app]
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		cfg := checkSettings(t, app, env)
		if !strings.HasPrefix(cfg.DatabaseURL, "postgres://") || !strings.Contains(cfg.DatabaseURL, "@postgres:5432/") {
			t.Errorf("%s database %q, want the postgres service", app, cfg.DatabaseURL)
		}
		if !strings.HasPrefix(cfg.RedisURL, "redis://redis:6379") {
			t.Errorf("%s redis %q, want the redis service", app, cfg.RedisURL)
		}
		if cfg.Instances != len(apps) {
			t.Errorf("%s LINKGATE_INSTANCES=%d, but compose runs %d instances", app, cfg.Instances, len(apps))
		}
		if cfg.AdminKey == "" {
			t.Errorf("%s has no default admin key for local use", app)
		}
		ip := netip.MustParseAddr(nginxIP)
		trusted := false
		for _, tp := range cfg.TrustedProxies {
			if pfx, err := netip.ParsePrefix(tp); err == nil {
				trusted = trusted || pfx.Contains(ip)
			} else if a, err := netip.ParseAddr(tp); err == nil {
				trusted = trusted || a == ip
			}
		}
		if !trusted {
			t.Errorf("%s trusts %v, not nginx at %s", app, cfg.TrustedProxies, nginxIP)
		}
		// The listener close's wait for the accept queue, the grace of
		// requests still running (store timeout), then the final click flush.
		if need := cfg.ShutdownDelay + cfg.DrainTimeout + quiesce.DefaultMaxWait + cfg.StoreTimeout + clicks.DefaultFlushTimeout; s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= need {
			t.Errorf("%s stop_grace_period %v must exceed shutdown delay %v + drain timeout %v + accept queue wait %v + store timeout %v + click flush %v",
				app, s.StopGracePeriod, cfg.ShutdownDelay, cfg.DrainTimeout, quiesce.DefaultMaxWait, cfg.StoreTimeout, clicks.DefaultFlushTimeout)
		}
		// nginx must close its idle connections to an instance before the
		// instance does at the end of the shutdown delay (see nginx.conf),
		// with a second to spare for timers and scheduling.
		if ka := nginxUpstreamKeepalive(t); ka+time.Second > cfg.ShutdownDelay {
			t.Errorf("%s shutdown delay %v must exceed nginx's upstream keepalive_timeout %v by at least 1s", app, cfg.ShutdownDelay, ka)
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("%s: want read_only and cap_drop [ALL]", app)
		}
	}
	// The network nginx's address lives in.
	for _, n := range p.Networks {
		for _, c := range n.Ipam.Config {
			if pfx, err := netip.ParsePrefix(c.Subnet); err == nil && pfx.Contains(netip.MustParseAddr(nginxIP)) {
				return
			}
		}
	}
	t.Errorf("no compose network has a subnet containing nginx's address %s", nginxIP)
}

// TestComposeGrafanaProvisioning checks the Grafana provisioning files against
// the compose mounts and services they name.
func TestComposeGrafanaProvisioning(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string         `json:"name"`
			UID       string         `json:"uid"`
			Type      string         `json:"type"`
			Access    string         `json:"access"`
			URL       string         `json:"url"`
			IsDefault bool           `json:"isDefault"`
			Editable  bool           `json:"editable"`
			JSONData  map[string]any `json:"jsonData"`
		} `json:"datasources"`
	}
	yamlStrict(t, "datasources/prometheus.yml", readRepoFile(t, "deploy/grafana/provisioning/datasources/prometheus.yml"), &ds)
	if len(ds.Datasources) != 1 {
		t.Fatalf("want one data source, got %d", len(ds.Datasources))
	}
	d := ds.Datasources[0]
	if d.UID != "prometheus" || d.Type != "prometheus" || d.Access != "proxy" {
		t.Errorf("data source uid=%q type=%q access=%q, want prometheus/prometheus/proxy", d.UID, d.Type, d.Access)
	}
	if d.URL != "http://prometheus:9090" {
		t.Errorf("data source url %q, want http://prometheus:9090", d.URL)
	}
	if _, ok := p.Services["prometheus"]; !ok {
		t.Error("the data source names a prometheus service compose does not have")
	}
	if d.JSONData["timeInterval"] != "15s" {
		t.Errorf("data source timeInterval %v, want the scrape interval 15s", d.JSONData["timeInterval"])
	}

	var prov struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name                  string `json:"name"`
			OrgID                 int    `json:"orgId"`
			Folder                string `json:"folder"`
			Type                  string `json:"type"`
			DisableDeletion       bool   `json:"disableDeletion"`
			AllowUIUpdates        bool   `json:"allowUiUpdates"`
			UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `json:"path"`
				FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
			} `json:"options"`
		} `json:"providers"`
	}
	yamlStrict(t, "dashboards/provider.yml", readRepoFile(t, "deploy/grafana/provisioning/dashboards/provider.yml"), &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" {
		t.Fatalf("want one file provider, got %+v", prov.Providers)
	}
	path := prov.Providers[0].Options.Path
	g := p.Services["grafana"]
	var mountedFrom string
	for _, v := range g.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == path {
			mountedFrom = v.Source
		}
	}
	if mountedFrom == "" {
		t.Fatalf("grafana mounts nothing at the provider path %s", path)
	}
	if _, err := os.Stat(filepath.Join(mountedFrom, "linkgate.json")); err != nil {
		t.Errorf("provider path %s (from %s) has no linkgate.json: %v", path, mountedFrom, err)
	}
	home := appEnv(g)("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
	if filepath.Dir(home) != path {
		t.Errorf("home dashboard %s is not under the provider path %s", home, path)
	}
	for k, want := range map[string]string{"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"} {
		if got := appEnv(g)(k); got != want {
			t.Errorf("grafana %s=%q, want %q", k, got, want)
		}
	}
}
