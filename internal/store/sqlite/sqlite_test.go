package sqlite_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
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
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			s, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "bench.db")})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var n atomic.Int64
			created := time.Now().UTC().Truncate(time.Microsecond)
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l := &links.Link{Code: fmt.Sprintf("b%d", n.Add(1)), URL: "https://example.com/some/long/path",
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
		s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "u.db"), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
