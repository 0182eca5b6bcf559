package postgres

import (
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/linkgate/linkgate/internal/testenv"
)

func openTest(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestEveryConnectionCommitsSynchronously checks synchronous_commit on several
// pooled connections at once, with the database and role defaults set to off:
// the startup parameter must win on every connection.
func TestEveryConnectionCommitsSynchronously(t *testing.T) {
	url := testenv.PostgresURL(t)
	ctx := t.Context()
	admin := openTest(t, url)
	var db string
	if err := admin.pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.pool.Exec(ctx, "ALTER DATABASE "+db+" SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	plain, err := pgx.Connect(ctx, url) // without our startup parameter
	if err != nil {
		t.Fatal(err)
	}
	var def string
	if err := plain.QueryRow(ctx, "SHOW synchronous_commit").Scan(&def); err != nil || def != "off" {
		t.Fatalf("database default synchronous_commit = %q, %v; the test needs off", def, err)
	}
	_ = plain.Close(ctx)

	s := openTest(t, url)
	const n = 3
	var conns []interface{ Release() }
	for i := range n {
		c, err := s.pool.Acquire(ctx) // held, so each is a distinct connection
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var v string
		if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != "on" {
			t.Errorf("connection %d: synchronous_commit = %q, want on", i, v)
		}
	}
	for _, c := range conns {
		c.Release()
	}
}

// TestConcurrentOpenMigratesOnce opens one fresh database from three
// goroutines at once: all succeed and each migration is applied once.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	url := testenv.PostgresURL(t)
	const n = 3
	stores := make([]*Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), Config{URL: url})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	var rows, versions int
	if err := stores[0].pool.QueryRow(t.Context(),
		"SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != versions || versions != 1 {
		t.Fatalf("schema_migrations has %d rows for %d versions, want 1 and 1", rows, versions)
	}
	for i, s := range stores {
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("store %d: %v", i, err)
		}
	}
	// Another open finds everything applied.
	s := openTest(t, url)
	if err := s.pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("after reopen: %d rows, %v", rows, err)
	}
}

func TestOpenRejects(t *testing.T) {
	for name, url := range map[string]string{
		"empty":       "",
		"bad url":     "postgres://%zz",
		"unreachable": "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.Context(), Config{URL: url})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
		})
	}
}
