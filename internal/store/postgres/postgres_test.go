package postgres_test

import (
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/store"
	"github.com/linkgate/linkgate/internal/store/postgres"
	"github.com/linkgate/linkgate/internal/store/storetest"
	"github.com/linkgate/linkgate/internal/testenv"
)

var _ store.Store = (*postgres.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.OpenFunc {
		url := testenv.PostgresURL(t)
		return func(t *testing.T) store.Store {
			t.Helper()
			s, err := postgres.Open(t.Context(), postgres.Config{URL: url})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			return s
		}
	})
}

// BenchmarkCreateLink measures durable (synchronous_commit=on) creates per
// second from concurrent callers; with more callers than create slots they
// share statements and commits (group commit).
func BenchmarkCreateLink(b *testing.B) {
	storetest.BenchmarkCreate(b, benchOpener(b))
}

func TestAddClicksStampsUpdatedAtMonotonically(t *testing.T) {
	storetest.UpdatedAtIsMonotonic(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := postgres.Open(t.Context(), postgres.Config{URL: testenv.PostgresURL(t), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// BenchmarkAddClicks measures one click flush (ns/code: the flush's time per
// link counted), with synchronous_commit=on.
func BenchmarkAddClicks(b *testing.B) {
	storetest.BenchmarkAddClicks(b, benchOpener(b))
}

// benchOpener opens stores on the test PostgreSQL database of b.
func benchOpener(b *testing.B) func(b *testing.B) store.Store {
	url := testenv.PostgresURL(b)
	return func(b *testing.B) store.Store {
		s, err := postgres.Open(b.Context(), postgres.Config{URL: url})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
}
