package dashboard

import (
	"os"
	"reflect"
	"testing"
)

func TestSubstitute(t *testing.T) {
	t.Parallel()
	values := map[string]string{"job": "linkgate", "instance": ".*", "__rate_interval": "4s"}
	cases := map[string]struct{ in, want string }{
		"plain":            {`up{job=~"$job"}`, `up{job=~"linkgate"}`},
		"braced":           {`up{job=~"${job}"}`, `up{job=~"linkgate"}`},
		"braced format":    {`up{instance=~"${instance:regex}"}`, `up{instance=~".*"}`},
		"brackets":         {`up{job=~"[[job]]"}`, `up{job=~"linkgate"}`},
		"brackets format":  {`up{job=~"[[job:pipe]]"}`, `up{job=~"linkgate"}`},
		"built-in":         {`rate(x[$__rate_interval])`, `rate(x[4s])`},
		"longer name kept": {`rate(x[$__rate_interval_ms])`, `rate(x[$__rate_interval_ms])`},
		"unknown kept":     {`rate(x{job=~"$job"}[$__interval])`, `rate(x{job=~"linkgate"}[$__interval])`},
		"prefix not taken": {`up{a="$jobs"}`, `up{a="$jobs"}`},
		"no references":    {`sum(up)`, `sum(up)`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := Substitute(tc.in, values); got != tc.want {
				t.Fatalf("Substitute(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestReferences(t *testing.T) {
	t.Parallel()
	got := References(`a{job=~"$job",i=~"${instance:regex}"}[$__rate_interval] / b{job=~"[[job]]"}[$__range]`)
	want := []string{"job", "instance", "__rate_interval", "__range"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("References = %q, want %q", got, want)
	}
	if got := References("sum(up)"); len(got) != 0 {
		t.Fatalf("References without any = %q", got)
	}
}

func TestQueriesFlattenRows(t *testing.T) {
	t.Parallel()
	d, err := Parse([]byte(`{"templating":{"list":[{"name":"job"},{"name":"instance"}]},"panels":[
		{"id":1,"type":"row","title":"Open row"},
		{"id":2,"type":"timeseries","title":"A","targets":[{"refId":"A","expr":"up"},{"refId":"B","expr":"x","instant":true}]},
		{"id":3,"type":"row","title":"Collapsed","panels":[
			{"id":4,"type":"stat","title":"B","targets":[{"refId":"A","expr":"y"}]}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(d.AllPanels()); got != 4 {
		t.Fatalf("AllPanels: %d panels, want 4", got)
	}
	want := []Query{
		{PanelID: 2, PanelTitle: "A", PanelType: "timeseries", RefID: "A", Expr: "up"},
		{PanelID: 2, PanelTitle: "A", PanelType: "timeseries", RefID: "B", Expr: "x", Instant: true},
		{PanelID: 4, PanelTitle: "B", PanelType: "stat", RefID: "A", Expr: "y"},
	}
	if got := d.Queries(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Queries = %+v, want %+v", got, want)
	}
	if got := d.VariableNames(); !reflect.DeepEqual(got, []string{"job", "instance"}) {
		t.Fatalf("VariableNames = %q", got)
	}
}

func TestParseRejectsNonObjects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{``, `[]`, `{"panels":{}}`} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q): no error", in)
		}
	}
}

// The shipped dashboard parses and has queries; package deploy checks them.
func TestParseShippedDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../grafana/dashboards/linkgate.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Queries()) == 0 {
		t.Fatal("no queries in the shipped dashboard")
	}
}
