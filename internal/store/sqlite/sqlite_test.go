package sqlite_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/store"
	"github.com/linkgate/linkgate/internal/store/sqlite"
	"github.com/linkgate/linkgate/internal/store/storetest"
)

var _ store.Store = (*sqlite.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.OpenFunc {
		path := filepath.Join(t.TempDir(), "links.db")
		return func(t *testing.T) store.Store {
			t.Helper()
			s, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
			if err != nil {
				t.Fatalf("open %s: %v", path, err)
			}
			return s
		}
	})
}

// BenchmarkCreateLink measures durable (synchronous=FULL) creates per second
// from concurrent callers; every create is its own committed transaction.
func BenchmarkCreateLink(b *testing.B) {
	storetest.BenchmarkCreate(b, openBench)
}

// openBench opens a durable store in a fresh file for a benchmark.
func openBench(b *testing.B) store.Store {
	s, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "bench.db")})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func TestAddClicksStampsUpdatedAtMonotonically(t *testing.T) {
	storetest.UpdatedAtIsMonotonic(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "u.db"), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// BenchmarkAddClicks measures one click flush into a durable database.
func BenchmarkAddClicks(b *testing.B) {
	storetest.BenchmarkAddClicks(b, openBench)
}
