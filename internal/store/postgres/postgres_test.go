package postgres_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
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
// second from concurrent callers; every create is its own transaction.
func BenchmarkCreateLink(b *testing.B) {
	url := testenv.PostgresURL(b)
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			s, err := postgres.Open(b.Context(), postgres.Config{URL: url})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			prefix := fmt.Sprintf("p%d-%d-", par, time.Now().UnixNano())
			var n atomic.Int64
			created := time.Now().UTC().Truncate(time.Microsecond)
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l := &links.Link{Code: fmt.Sprintf("%s%d", prefix, n.Add(1)), URL: "https://example.com/some/long/path",
						Redirect: links.RedirectFound, CreatedAt: created}
					if err := s.CreateLink(b.Context(), l); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
		})
	}
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
