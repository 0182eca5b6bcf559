package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/linkgate/linkgate/internal/testenv"
)

const promtoolTimeout = 2 * time.Minute

// promtool returns the promtool binary (Debian package prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "promtool", "prometheus")
}

// ruleFile is the shape of deploy/prometheus/alerts.yml.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Record      string            `json:"record,omitempty"`
	Alert       string            `json:"alert,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ruleTestFile is the shape of a promtool unit test file.
type ruleTestFile struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval,omitempty"`
	Tests              []struct {
		Name        string `json:"name"`
		Interval    string `json:"interval,omitempty"`
		InputSeries []struct {
			Series string `json:"series"`
			Values string `json:"values"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations,omitempty"`
			} `json:"exp_alerts,omitempty"`
		} `json:"alert_rule_test,omitempty"`
		PromqlExprTest []struct {
			Expr       string `json:"expr"`
			EvalTime   string `json:"eval_time"`
			ExpSamples []struct {
				Labels string  `json:"labels"`
				Value  float64 `json:"value"`
			} `json:"exp_samples"`
		} `json:"promql_expr_test,omitempty"`
	} `json:"tests"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	yamlStrict(t, "deploy/prometheus/alerts.yml", readRepoFile(t, "deploy/prometheus/alerts.yml"), &rf)
	return rf
}

func alerts(rf ruleFile) []rule {
	var out []rule
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

func mustDuration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: duration %q: %v", what, s, err)
	}
	return time.Duration(d)
}

// TestPrometheusConfig runs promtool check config on prometheus.yml where it
// lies (rule_files resolve relative to it) and again in a directory laid out
// as docker-compose.yml mounts it into the Prometheus container.
func TestPrometheusConfig(t *testing.T) {
	t.Parallel()
	tool := promtool(t)
	root := repoRoot(t)

	out := mustRun(t, root, promtoolTimeout, tool, "check", "config", "prometheus.yml")
	if !strings.Contains(out, "1 rule files found") {
		t.Errorf("promtool found no rule file through prometheus.yml:\n%s", out)
	}

	// The container's view: every bind mount of the prometheus service copied
	// under a fake root, then the --config.file the service runs with.
	p := loadCompose(t)
	svc, ok := p.Services["prometheus"]
	if !ok {
		t.Fatal("docker-compose.yml has no prometheus service")
	}
	fake := t.TempDir()
	for _, v := range svc.Volumes {
		if v.Type != "bind" {
			continue
		}
		dst := filepath.Join(fake, filepath.FromSlash(v.Target))
		if fi, err := os.Stat(v.Source); err != nil {
			t.Fatalf("prometheus bind source %s: %v", v.Source, err)
		} else if fi.IsDir() {
			copyTree(t, v.Source, dst)
		} else {
			b, err := os.ReadFile(v.Source)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, dst, b)
		}
	}
	configFile := ""
	for _, a := range svc.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configFile = v
		}
	}
	if configFile == "" {
		t.Fatalf("prometheus service command %q sets no --config.file", svc.Command)
	}
	out = mustRun(t, fake, promtoolTimeout, tool, "check", "config", filepath.Join(fake, filepath.FromSlash(configFile)))
	if !strings.Contains(out, "1 rule files found") {
		t.Errorf("in the compose layout promtool found no rule file:\n%s", out)
	}
}

// TestAlertRules checks the rules and runs their unit tests with promtool.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	tool := promtool(t)
	dir := repoFile(t, "deploy/prometheus")
	mustRun(t, dir, promtoolTimeout, tool, "check", "rules", "alerts.yml")
	out := mustRun(t, dir, promtoolTimeout, tool, "test", "rules", "alerts_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules did not report SUCCESS:\n%s", out)
	}
}

// TestBrokenRulesFail proves promtool is a real check here: a copy of the
// rules with a syntax error fails check rules, and its unit tests fail too.
func TestBrokenRulesFail(t *testing.T) {
	t.Parallel()
	tool := promtool(t)
	dir := t.TempDir()
	copyTree(t, repoFile(t, "deploy/prometheus"), dir)
	src := string(readRepoFile(t, "deploy/prometheus/alerts.yml"))
	broken := strings.Replace(src, "rate(http_requests_total{", "rate(http_requests_total{{", 1)
	if broken == src {
		t.Fatal("alerts.yml has no rate(http_requests_total{ to break")
	}
	writeFile(t, filepath.Join(dir, "alerts.yml"), []byte(broken))
	if r := run(t, dir, promtoolTimeout, tool, "check", "rules", "alerts.yml"); r.err == nil {
		t.Errorf("promtool check rules accepted a broken expression:\n%s", r.out)
	}
	if r := run(t, dir, promtoolTimeout, tool, "test", "rules", "alerts_test.yml"); r.err == nil {
		t.Errorf("promtool test rules passed with a broken expression:\n%s", r.out)
	}
}

// TestEveryAlertTestedBothWays requires, for every alert, a unit test case in
// which it fires and one, at or after its "for" duration, in which it must not.
func TestEveryAlertTestedBothWays(t *testing.T) {
	t.Parallel()
	rf := loadRules(t)
	var tf ruleTestFile
	yamlStrict(t, "deploy/prometheus/alerts_test.yml", readRepoFile(t, "deploy/prometheus/alerts_test.yml"), &tf)
	if len(tf.RuleFiles) != 1 || tf.RuleFiles[0] != "alerts.yml" {
		t.Errorf("alerts_test.yml rule_files = %q, want [alerts.yml]", tf.RuleFiles)
	}

	type seen struct{ fires, quiet bool }
	cases := map[string]*seen{}
	forOf := map[string]time.Duration{}
	for _, a := range alerts(rf) {
		if _, dup := cases[a.Alert]; dup {
			t.Errorf("alert %s defined twice", a.Alert)
		}
		cases[a.Alert] = &seen{}
		forOf[a.Alert] = mustDuration(t, a.Alert+" for", a.For)
	}
	if len(cases) == 0 {
		t.Fatal("alerts.yml defines no alert")
	}
	for _, tc := range tf.Tests {
		for _, at := range tc.AlertRuleTest {
			s, ok := cases[at.Alertname]
			if !ok {
				t.Errorf("test %q checks unknown alert %q", tc.Name, at.Alertname)
				continue
			}
			if len(at.ExpAlerts) > 0 {
				s.fires = true
				for _, e := range at.ExpAlerts {
					if len(e.ExpAnnotations) == 0 {
						t.Errorf("test %q: firing %s without exp_annotations: the templates go untested", tc.Name, at.Alertname)
					}
				}
			} else if mustDuration(t, tc.Name+" eval_time", at.EvalTime) >= forOf[at.Alertname] {
				s.quiet = true
			}
		}
	}
	for name, s := range cases {
		if !s.fires {
			t.Errorf("no unit test in which %s fires", name)
		}
		if !s.quiet {
			t.Errorf("no unit test in which %s must stay quiet after its for duration", name)
		}
	}
}

// mutate rewrites every alert of alerts.yml to expr and returns the YAML.
func mutate(t *testing.T, expr string) []byte {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(readRepoFile(t, "deploy/prometheus/alerts.yml"), &doc); err != nil {
		t.Fatal(err)
	}
	for _, g := range doc["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rm := r.(map[string]any)
			if _, ok := rm["alert"]; ok {
				rm["expr"] = expr
			}
		}
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAlertMutantsFailUnitTests replaces every alert's expression, first with
// one that never fires, then with one that always fires, and requires the
// unit tests to fail for every alert by name: each alert's tests would notice
// if its expression stopped working either way.
func TestAlertMutantsFailUnitTests(t *testing.T) {
	t.Parallel()
	tool := promtool(t)
	failed := regexp.MustCompile(`alertname: (\w+),`)
	for name, expr := range map[string]string{"never fires": "vector(0) > 0", "always fires": "vector(1)"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			copyTree(t, repoFile(t, "deploy/prometheus"), dir)
			writeFile(t, filepath.Join(dir, "alerts.yml"), mutate(t, expr))
			r := run(t, dir, promtoolTimeout, tool, "test", "rules", "alerts_test.yml")
			if r.err == nil {
				t.Fatalf("unit tests passed with every alert set to %q:\n%s", expr, r.out)
			}
			caught := map[string]bool{}
			for _, m := range failed.FindAllStringSubmatch(r.out, -1) {
				caught[m[1]] = true
			}
			var missed []string
			for _, a := range alerts(loadRules(t)) {
				if !caught[a.Alert] {
					missed = append(missed, a.Alert)
				}
			}
			if len(missed) > 0 {
				t.Errorf("with expr %q no unit test of %v failed:\n%s", expr, missed, r.out)
			}
		})
	}
}

// TestRuleExpressions parses every rule with the PromQL parser and checks that
// it uses only catalogued metrics and labels, selects the linkgate job, and
// that alerts carry a severity and both annotations.
func TestRuleExpressions(t *testing.T) {
	t.Parallel()
	rf := loadRules(t)
	cat := catalogue(t)
	recorded := map[string]metricInfo{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = metricInfo{}
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Record + r.Alert
			if (r.Record == "") == (r.Alert == "") {
				t.Errorf("group %s: a rule must have exactly one of record and alert (%q)", g.Name, name)
			}
			for _, p := range checkSelectors(cat, recorded, r.Expr) {
				t.Errorf("%s: %s", name, p)
			}
			e, err := parser.ParseExpr(r.Expr)
			if err != nil {
				continue // reported above
			}
			parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				if _, isRecorded := recorded[vs.Name]; isRecorded {
					return nil
				}
				for _, m := range vs.LabelMatchers {
					if m.Name == "job" && m.Value == "linkgate" {
						return nil
					}
				}
				t.Errorf(`%s: %s does not select job="linkgate"`, name, vs.String())
				return nil
			})
			if r.Alert == "" {
				continue
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", name, s)
			}
			for _, k := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("%s: no %s annotation", name, k)
				}
			}
		}
	}
	// The alerts the design asks for.
	have := map[string]bool{}
	for _, a := range alerts(rf) {
		have[a.Alert] = true
	}
	var missing []string
	for _, want := range []string{"LinkgateAvailabilityBudgetFastBurn", "LinkgateAvailabilityBudgetSlowBurn",
		"LinkgateLatencyBudgetFastBurn", "LinkgateLatencyBudgetSlowBurn", "LinkgateRateLimiterFallbackActive",
		"LinkgateRedisErrors", "LinkgateHigh5xx", "LinkgateInstanceDown"} {
		if !have[want] {
			missing = append(missing, want)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("alerts.yml lacks %v", missing)
	}
}

// TestPrometheusScrapeTargets checks prometheus.yml against docker-compose.yml:
// every target is a compose service, the linkgate job scrapes every app
// instance on the port it listens on, and the rules file is the one shipped.
func TestPrometheusScrapeTargets(t *testing.T) {
	t.Parallel()
	var cfg struct {
		Global struct {
			ScrapeInterval     string            `json:"scrape_interval"`
			ScrapeTimeout      string            `json:"scrape_timeout"`
			EvaluationInterval string            `json:"evaluation_interval"`
			ExternalLabels     map[string]string `json:"external_labels"`
		} `json:"global"`
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	yamlStrict(t, "prometheus.yml", readRepoFile(t, "prometheus.yml"), &cfg)
	if got := mustDuration(t, "scrape_interval", cfg.Global.ScrapeInterval); got != 15*time.Second {
		t.Errorf("scrape_interval = %v, want 15s (the dashboard's $__rate_interval assumes it)", got)
	}
	if len(cfg.RuleFiles) != 1 || cfg.RuleFiles[0] != "deploy/prometheus/alerts.yml" {
		t.Errorf("rule_files = %q, want [deploy/prometheus/alerts.yml]", cfg.RuleFiles)
	}

	p := loadCompose(t)
	apps := appServices(t, p)
	jobs := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], s.Targets...)
		}
	}
	for _, want := range []string{"linkgate", "nginx", "redis", "prometheus"} {
		if len(jobs[want]) == 0 {
			t.Errorf("prometheus.yml has no targets for job %q", want)
		}
	}
	for job, targets := range jobs {
		for _, target := range targets {
			host, _, ok := strings.Cut(target, ":")
			if !ok {
				t.Errorf("job %s target %q has no port", job, target)
			}
			if host == "localhost" && job == "prometheus" {
				continue
			}
			if _, ok := p.Services[host]; !ok {
				t.Errorf("job %s target %q is not a compose service", job, target)
			}
		}
	}
	var want []string
	for _, name := range apps {
		want = append(want, fmt.Sprintf("%s:%s", name, appPort(t, p, name)))
	}
	got := append([]string{}, jobs["linkgate"]...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("job linkgate scrapes %v, want every app instance %v", got, want)
	}
}
