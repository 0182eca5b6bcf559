package migrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadOrdersByVersion(t *testing.T) {
	fsys := fstest.MapFS{
		"0010_later.sql": {Data: []byte("SELECT 10;")},
		"0002_two.sql":   {Data: []byte("SELECT 2;")},
		"1_first.sql":    {Data: []byte("SELECT 1;")},
		"README.md":      {Data: []byte("not a migration")},
	}
	ms, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Name)
	}
	want := "1_first.sql,0002_two.sql,0010_later.sql"
	if strings.Join(got, ",") != want {
		t.Fatalf("order = %v, want %s", got, want)
	}
	if ms[2].Version != 10 || ms[2].SQL != "SELECT 10;" {
		t.Fatalf("last = %+v", ms[2])
	}
}

func TestLoadRejects(t *testing.T) {
	tests := map[string]fstest.MapFS{
		"no files":       {},
		"duplicate":      {"0001_a.sql": {Data: []byte("x")}, "001_b.sql": {Data: []byte("y")}},
		"no description": {"0001.sql": {Data: []byte("x")}},
		"empty desc":     {"0001_.sql": {Data: []byte("x")}},
		"not a number":   {"v1_init.sql": {Data: []byte("x")}},
		"signed":         {"+1_init.sql": {Data: []byte("x")}},
		"zero":           {"0000_init.sql": {Data: []byte("x")}},
		"empty file":     {"0001_init.sql": {Data: []byte(" \n\t")}},
	}
	for name, fsys := range tests {
		t.Run(name, func(t *testing.T) {
			if ms, err := Load(fsys); err == nil {
				t.Fatalf("Load succeeded with %+v", ms)
			}
		})
	}
}
