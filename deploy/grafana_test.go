package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/linkgate/linkgate/deploy/dashboard"
)

func loadDashboard(t *testing.T) *dashboard.Dashboard {
	t.Helper()
	d, err := dashboard.Parse(readRepoFile(t, "deploy/grafana/dashboards/linkgate.json"))
	if err != nil {
		t.Fatalf("linkgate.json: %v", err)
	}
	return d
}

// Stand-ins for Grafana's variables, so that an expression parses as PromQL
// and the test can still tell which variable stood where. The durations are
// odd on purpose: a literal range such as [5m] never equals them.
const (
	rateIntervalStandIn = "7m13s" // $__rate_interval
	rangeStandIn        = "11h17m"
)

func varStandIn(name string) string { return "__var_" + name + "__" }

// substitute replaces Grafana variable references in expr: $__rate_interval
// and $__range by odd durations, dashboard variables by varStandIn. Anything
// else (for example $__interval) is left alone and so fails to parse.
func substitute(expr string, vars map[string]bool) string {
	values := map[string]string{"__rate_interval": rateIntervalStandIn, "__range": rangeStandIn}
	for name := range vars {
		values[name] = varStandIn(name)
	}
	return dashboard.Substitute(expr, values)
}

// jobVarFor names the variable that must select the job of a metric: the
// nginx and Redis exporters run as their own jobs.
func jobVarFor(metric string) string {
	switch {
	case strings.HasPrefix(metric, "nginx_"):
		return "nginx_job"
	case strings.HasPrefix(metric, "redis_"):
		return "redis_job"
	}
	return "job"
}

// checkPanelExpr parses one target's expression and returns what is wrong with
// it: unknown metrics or labels, a selector without the job (and for linkgate
// metrics, instance) variable, a range that is not $__rate_interval (or
// $__range in an instant query), rate() over a non-counter, or a
// histogram_quantile that loses le.
func checkPanelExpr(cat map[string]metricInfo, expr string, vars map[string]bool, instant bool) []string {
	sub := substitute(expr, vars)
	problems := checkSelectors(cat, nil, sub)
	counter := regexp.MustCompile(`_(total|count|sum|bucket)$`)
	e, err := parser.ParseExpr(sub)
	if err != nil {
		return problems // checkSelectors reported it
	}
	matcher := func(vs *parser.VectorSelector, name string) *labels.Matcher {
		for _, m := range vs.LabelMatchers {
			if m.Name == name {
				return m
			}
		}
		return nil
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			jv := jobVarFor(n.Name)
			if m := matcher(n, "job"); m == nil || m.Type != labels.MatchRegexp || m.Value != varStandIn(jv) {
				problems = append(problems, fmt.Sprintf(`%s does not filter job=~"$%s"`, n.Name, jv))
			}
			if jv == "job" {
				if m := matcher(n, "instance"); m == nil || m.Type != labels.MatchRegexp || m.Value != varStandIn("instance") {
					problems = append(problems, fmt.Sprintf(`%s does not filter instance=~"$instance"`, n.Name))
				}
			}
		case *parser.MatrixSelector:
			r := model.Duration(n.Range).String()
			switch {
			case r == rateIntervalStandIn:
			case r == rangeStandIn && instant:
			case r == rangeStandIn:
				problems = append(problems, "$__range in a range query: use $__rate_interval")
			default:
				problems = append(problems, fmt.Sprintf("fixed range [%s]: use [$__rate_interval]", r))
			}
		case *parser.Call:
			switch n.Func.Name {
			case "rate", "irate", "increase":
				if ms, ok := n.Args[0].(*parser.MatrixSelector); ok {
					name := ms.VectorSelector.(*parser.VectorSelector).Name
					if !counter.MatchString(name) {
						problems = append(problems, fmt.Sprintf("%s() over %s, which is not a counter", n.Func.Name, name))
					}
				}
			case "histogram_quantile":
				agg, ok := n.Args[1].(*parser.AggregateExpr)
				if !ok || agg.Without || !contains(agg.Grouping, "le") {
					problems = append(problems, "histogram_quantile over an aggregation that does not keep le")
				}
			}
		}
		return nil
	})
	return problems
}

func TestCheckPanelExprCatchesMistakes(t *testing.T) {
	t.Parallel()
	cat := catalogue(t)
	vars := map[string]bool{"job": true, "instance": true, "nginx_job": true}
	good := `sum(rate(http_requests_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))`
	cases := map[string]struct {
		expr    string
		instant bool
		want    string
	}{
		"good":                {expr: good},
		"braced variables":    {expr: `sum(rate(http_requests_total{job=~"${job}",instance=~"${instance:regex}"}[${__rate_interval}]))`},
		"fixed range":         {expr: `sum(rate(http_requests_total{job=~"$job",instance=~"$instance"}[5m]))`, want: "fixed range [5m]"},
		"no job":              {expr: `sum(rate(http_requests_total{instance=~"$instance"}[$__rate_interval]))`, want: `job=~"$job"`},
		"job not a variable":  {expr: `sum(rate(http_requests_total{job="linkgate",instance=~"$instance"}[$__rate_interval]))`, want: `job=~"$job"`},
		"no instance":         {expr: `go_goroutines{job=~"$job"}`, want: `instance=~"$instance"`},
		"nginx own job":       {expr: `nginx_up{job=~"$nginx_job"}`},
		"nginx wrong job":     {expr: `nginx_up{job=~"$job"}`, want: `job=~"$nginx_job"`},
		"interval":            {expr: `rate(http_requests_total{job=~"$job",instance=~"$instance"}[$__interval])`, want: "parse"},
		"range in range":      {expr: `increase(http_requests_total{job=~"$job",instance=~"$instance"}[$__range])`, want: "$__range"},
		"range in instant":    {expr: `increase(http_requests_total{job=~"$job",instance=~"$instance"}[$__range])`, instant: true},
		"rate of gauge":       {expr: `rate(go_goroutines{job=~"$job",instance=~"$instance"}[$__rate_interval])`, want: "not a counter"},
		"quantile without le": {expr: `histogram_quantile(0.99, sum by (path) (rate(http_request_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))`, want: "le"},
		"unknown metric":      {expr: `linkgate_links_total{job=~"$job",instance=~"$instance"}`, want: "unknown metric"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := checkPanelExpr(cat, tc.expr, vars, tc.instant)
			if tc.want == "" {
				if len(got) > 0 {
					t.Fatalf("problems %q, want none", got)
				}
				return
			}
			if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), tc.want) {
				t.Fatalf("problems %q, want one mentioning %q", got, tc.want)
			}
		})
	}
}

// TestDashboardVariables: a data source variable, and job, instance and the
// exporters' job variables queried through it.
func TestDashboardVariables(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q: both needed for provisioning and links", d.UID, d.Title)
	}
	vars := map[string]dashboard.Variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %s defined twice", v.Name)
		}
		vars[v.Name] = v
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf(`want a variable "datasource" of type datasource with query prometheus, got %+v`, ds)
	}
	for _, name := range []string{"job", "instance", "nginx_job", "redis_job"} {
		v, ok := vars[name]
		if !ok {
			t.Errorf("no %s variable", name)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: type %q datasource %+v, want a query through ${datasource}", name, v.Type, v.Datasource)
		}
		if !strings.HasPrefix(v.Definition, "label_values(") {
			t.Errorf("variable %s: definition %q is not a label_values query", name, v.Definition)
		}
	}
	if !strings.Contains(vars["job"].Definition, "linkgate_") {
		t.Errorf("job variable %q should list the jobs that export linkgate metrics", vars["job"].Definition)
	}
	if inst := vars["instance"]; !strings.Contains(inst.Definition, `job=~"$job"`) || !inst.IncludeAll || inst.AllValue != ".*" {
		t.Errorf(`instance variable should follow $job and offer All as ".*": %+v`, inst)
	}
}

// TestDashboardPanels checks every panel's layout, metadata and queries.
func TestDashboardPanels(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	vars := map[string]bool{}
	for _, name := range d.VariableNames() {
		vars[name] = true
	}
	cat := catalogue(t)
	panels := d.AllPanels()
	if len(panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	ids := map[int]string{}
	used := map[string]bool{} // metric names queried
	var quantiles []string
	for _, p := range panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			t.Errorf("%s: id must be positive", where)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("%s: id also used by %q", where, other)
		}
		ids[p.ID] = p.Title
		if strings.TrimSpace(p.Title) == "" {
			t.Errorf("%s: no title", where)
		}
		if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", where, p.GridPos)
		}
		if p.Type == "row" {
			continue // rows hold no data
		}
		if strings.TrimSpace(p.Description) == "" {
			t.Errorf("%s: no description", where)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("%s: no unit (fieldConfig.defaults.unit)", where)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want uid ${datasource}", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("%s: refId %q empty or repeated", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s %s: datasource %+v, want uid ${datasource}", where, tg.RefID, tg.Datasource)
			}
			for _, problem := range checkPanelExpr(cat, tg.Expr, vars, tg.Instant) {
				t.Errorf("%s %s: %s\n\t%s", where, tg.RefID, problem, tg.Expr)
			}
			if e, err := parser.ParseExpr(substitute(tg.Expr, vars)); err == nil {
				parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
					switch n := n.(type) {
					case *parser.VectorSelector:
						used[n.Name] = true
					case *parser.Call:
						if n.Func.Name == "histogram_quantile" {
							quantiles = append(quantiles, n.Args[0].String())
						}
					}
					return nil
				})
			}
		}
	}

	// No two panels share a cell.
	for i, a := range panels {
		for _, b := range panels[i+1:] {
			if a.GridPos == nil || b.GridPos == nil {
				continue
			}
			ga, gb := *a.GridPos, *b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %d %q %+v and %d %q %+v overlap", a.ID, a.Title, ga, b.ID, b.Title, gb)
			}
		}
	}

	// Every application metric of DESIGN.md section 8 is on the dashboard.
	for name := range cat {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		if !strings.HasPrefix(name, "linkgate_") && !strings.HasPrefix(name, "http_") {
			continue
		}
		if !used[name] && !used[base+"_bucket"] && !used[base+"_count"] {
			t.Errorf("no panel shows %s", name)
		}
	}
	for _, name := range append(designMetrics(), "nginx_http_requests_total") {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	for _, q := range []string{"0.95", "0.99"} {
		if !contains(quantiles, q) {
			t.Errorf("no panel shows the %s latency quantile (have %v)", q, quantiles)
		}
	}
}

// TestDashboardDefaultsMatchProvisioning: the dashboard's default data source
// and job are the provisioned data source uid and prometheus.yml's job.
func TestDashboardDefaultsMatchProvisioning(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	for _, v := range d.Templating.List {
		switch v.Name {
		case "datasource":
			if fmt.Sprint(v.Current.Value) != "prometheus" {
				t.Errorf("datasource default %v, want the provisioned uid prometheus", v.Current.Value)
			}
		case "job":
			if !strings.Contains(fmt.Sprint(v.Current.Value), "linkgate") {
				t.Errorf("job default %v, want linkgate (prometheus.yml's job)", v.Current.Value)
			}
		}
	}
}
