package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store"
	"github.com/linkgate/linkgate/internal/testenv"
)

// roundTrip creates a link through s and reads it back.
func roundTrip(t *testing.T, s store.Store) {
	t.Helper()
	l := &links.Link{Code: "opened", URL: "https://example.com/", Redirect: links.RedirectFound}
	if err := s.CreateLink(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLink(t.Context(), "opened"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSQLiteAbsolute(t *testing.T) {
	path := filepath.Join(t.TempDir(), "abs.db")
	s, err := store.Open(t.Context(), "sqlite://"+path, store.Options{}) // sqlite:///tmp/...
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	roundTrip(t, s)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not at %s: %v", path, err)
	}
}

func TestOpenSQLiteRelative(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, u := range []string{"sqlite://rel.db", "sqlite://data/rel.db", "SQLite://./dot.db"} {
		s, err := store.Open(t.Context(), u, store.Options{})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		roundTrip(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"rel.db", "data/rel.db", "dot.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("want %s relative to the working directory: %v", f, err)
		}
	}
}

func TestOpenPostgres(t *testing.T) {
	u := testenv.PostgresURL(t)
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		_, rest, _ := strings.Cut(u, "://")
		s, err := store.Open(t.Context(), scheme+rest, store.Options{})
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		if err := s.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
		if scheme == "postgres://" {
			roundTrip(t, s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	tests := map[string]struct{ url, want string }{
		"empty":       {"", "must start with sqlite:// or postgres://"},
		"no scheme":   {"linkgate.db", "must start with"},
		"mysql":       {"mysql://root:hunter2@localhost/db", `"mysql"`},
		"redis":       {"redis://localhost:6379/0", `"redis"`},
		"sqlite:path": {"sqlite:linkgate.db", "must start with"},
		"no path":     {"sqlite://", "no path"},
		"memory":      {"sqlite://:memory:", "in-memory"},
		"query":       {"sqlite://x.db?_pragma=synchronous(OFF)", "'?'"},
		"secret-ish":  {"user:hunter2@host://x", "must start with"},
		"pg bad url":  {"postgres://%zz", "cannot parse"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := store.Open(context.Background(), tc.url, store.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q repeats a password", err)
			}
		})
	}
}
