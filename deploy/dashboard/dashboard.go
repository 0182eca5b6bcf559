// Package dashboard reads the Grafana dashboard JSON that linkgate ships
// (deploy/grafana/dashboards) and turns its panel queries into PromQL: it
// lists every panel target's expression and substitutes Grafana's variable
// references ($job, ${instance:regex}, [[var]], $__rate_interval, $__range,
// ...) with values the caller chooses.
//
// The static checks in package deploy substitute stand-ins and parse the
// result; the end-to-end tests substitute real values and run the queries
// against a real Prometheus. Both read the dashboard through this package, so
// they agree on what a panel queries.
//
// Concurrency: the functions are pure. A Dashboard is a plain value that
// Parse fills once; it is safe for concurrent reads, and its methods only
// read.
package dashboard

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// Dashboard is the part of a Grafana dashboard JSON model that linkgate's
// tests read. Fields Grafana has but this type lacks are ignored by Parse.
type Dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Editable   bool   `json:"editable"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	// Panels are the top-level panels; a collapsed row holds its own in
	// Panel.Panels. AllPanels flattens them.
	Panels []Panel `json:"panels"`
}

// DatasourceRef names a data source, by uid (which may itself be a variable
// reference such as "${datasource}") and plugin type.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is one template variable of the dashboard.
type Variable struct {
	Name string `json:"name"`
	// Type is Grafana's variable type: "query", "datasource", "custom", ...
	Type string `json:"type"`
	// Query is kept raw: a string for datasource variables, a string or an
	// object for query variables, depending on the Grafana version.
	Query json.RawMessage `json:"query"`
	// Definition is the query as written, e.g. label_values(up, job).
	Definition string         `json:"definition"`
	Datasource *DatasourceRef `json:"datasource"`
	IncludeAll bool           `json:"includeAll"`
	Multi      bool           `json:"multi"`
	AllValue   string         `json:"allValue"`
	Current    struct {
		// Value is the default selection: a string, or a list of strings
		// for multi-value variables; "$__all" stands for All.
		Value any `json:"value"`
	} `json:"current"`
}

// GridPos is a panel's place on Grafana's 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Panel is one panel, or a row (Type "row") whose collapsed panels are in
// Panels.
type Panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *DatasourceRef `json:"datasource"`
	GridPos     *GridPos       `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []Target `json:"targets"`
	Panels  []Panel  `json:"panels"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *DatasourceRef `json:"datasource"`
	// Instant is true for an instant query (evaluated once, at the end of
	// the dashboard's time range); otherwise Grafana runs a range query.
	Instant bool `json:"instant"`
}

// Query is one target of a panel, with the panel it belongs to.
type Query struct {
	PanelID    int
	PanelTitle string
	PanelType  string
	RefID      string
	// Expr is the expression as written, variable references included.
	Expr    string
	Instant bool
}

// Parse decodes a dashboard JSON model. It returns an error when data is not
// a JSON object of that shape.
func Parse(data []byte) (*Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("parse dashboard: %w", err)
	}
	return &d, nil
}

// AllPanels returns every panel, rows included, depth-first in document
// order: a row is followed by the panels it holds.
func (d *Dashboard) AllPanels() []Panel {
	return flatten(d.Panels, nil)
}

func flatten(ps, out []Panel) []Panel {
	for _, p := range ps {
		out = append(out, p)
		out = flatten(p.Panels, out)
	}
	return out
}

// VariableNames returns the names of the dashboard's template variables, in
// their order.
func (d *Dashboard) VariableNames() []string {
	out := make([]string, 0, len(d.Templating.List))
	for _, v := range d.Templating.List {
		out = append(out, v.Name)
	}
	return out
}

// Queries returns every target of every panel that is not a row, in
// AllPanels order, including targets whose expression is empty.
func (d *Dashboard) Queries() []Query {
	var out []Query
	for _, p := range d.AllPanels() {
		if p.Type == "row" {
			continue
		}
		for _, t := range p.Targets {
			out = append(out, Query{
				PanelID: p.ID, PanelTitle: p.Title, PanelType: p.Type,
				RefID: t.RefID, Expr: t.Expr, Instant: t.Instant,
			})
		}
	}
	return out
}

// reference matches Grafana's variable syntaxes: ${name}, ${name:format},
// $name and [[name]] / [[name:format]]. Built per call: the package keeps no
// state.
func reference() *regexp.Regexp {
	return regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]`)
}

// Substitute replaces every variable reference in expr whose name is a key of
// values (without the $, e.g. "job", "__rate_interval") by its value,
// verbatim: the caller formats multi-value selections (Grafana joins them
// as a regex alternation inside =~). References to other names are left as
// written, so that they show up when the result is parsed or run.
func Substitute(expr string, values map[string]string) string {
	ref := reference()
	return ref.ReplaceAllStringFunc(expr, func(m string) string {
		sub := ref.FindStringSubmatch(m)
		if v, ok := values[sub[1]+sub[2]+sub[3]]; ok {
			return v
		}
		return m
	})
}

// References returns the names of the variables expr refers to (built-ins
// such as __rate_interval included), each once, in order of first use.
func References(expr string) []string {
	var out []string
	seen := map[string]bool{}
	for _, sub := range reference().FindAllStringSubmatch(expr, -1) {
		name := sub[1] + sub[2] + sub[3]
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}
