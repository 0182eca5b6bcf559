package postgres

import (
	"context"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"

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
	nMigrations := migrationCount(t)
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
	if rows != nMigrations || versions != nMigrations {
		t.Fatalf("schema_migrations has %d rows for %d versions, want %d and %d", rows, versions, nMigrations, nMigrations)
	}
	for i, s := range stores {
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("store %d: %v", i, err)
		}
	}
	// Another open finds everything applied.
	s := openTest(t, url)
	if err := s.pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil || rows != nMigrations {
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

// advisoryLocksSQL counts the pg_locks rows of the bigint advisory key $1 in
// the current database (the key's high half is classid, its low half objid).
const advisoryLocksSQL = `SELECT count(*) FROM pg_locks
	WHERE locktype = 'advisory' AND objsubid = 1
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND (classid::bigint << 32 | objid::bigint) = $1`

// TestAddClicksWaitsForClickFlushLock holds clickFlushLock in another
// transaction: AddClicks must wait for it in exclusive mode before it locks
// any row (so concurrent batches run one at a time), count once it is
// released, and hold the lock no longer than its transaction.
func TestAddClicksWaitsForClickFlushLock(t *testing.T) {
	s := openTest(t, testenv.PostgresURL(t))
	ctx := t.Context()
	if err := s.CreateLink(ctx, newLink("flushlk", "https://example.com/lock")); err != nil {
		t.Fatal(err)
	}
	holder, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(context.Background()) }()
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", clickFlushLock); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.AddClicks(context.Background(), map[string]int64{"flushlk": 3}) }()

	// Poll until AddClicks's backend waits on the advisory lock.
	testenv.WaitFor(t, 10*time.Second, "AddClicks to wait on the click flush lock", func() bool {
		select {
		case err := <-done:
			t.Fatalf("AddClicks returned (%v) while another transaction held the click flush lock", err)
		default:
		}
		var waiting int
		if err := s.pool.QueryRow(ctx, advisoryLocksSQL+" AND NOT granted AND mode = 'ExclusiveLock'", clickFlushLock).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting == 1
	})
	// It waits before touching the rows: the link is not locked yet.
	probe, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = probe.Rollback(context.Background()) }() // a failing test must still return its connection
	if _, err := probe.Exec(ctx, "SELECT 1 FROM links WHERE code = 'flushlk' FOR UPDATE NOWAIT"); err != nil {
		t.Fatalf("the link is locked while AddClicks waits for the click flush lock: %v", err)
	}
	if err := probe.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AddClicks did not finish after the lock was released")
	}
	// The lock ends with AddClicks's transaction.
	var held int
	if err := s.pool.QueryRow(ctx, advisoryLocksSQL, clickFlushLock).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Fatalf("%d advisory locks on the click flush key after AddClicks returned, want 0", held)
	}
	l, err := s.GetLink(ctx, "flushlk")
	if err != nil {
		t.Fatal(err)
	}
	if l.Clicks != 3 {
		t.Fatalf("clicks = %d, want 3", l.Clicks)
	}
}

// TestLinksLeaveRoomForClickUpdates: the migrations give links a fillfactor
// below 100, so click flushes can update rows in place (HOT).
func TestLinksLeaveRoomForClickUpdates(t *testing.T) {
	s := openTest(t, testenv.PostgresURL(t))
	checkFillfactor(t, s)
}

// TestMigratesPopulatedVersion1: a database an earlier build left at schema
// version 1, with links in it, is brought to the current version at Open,
// links intact and with the fillfactor set.
func TestMigratesPopulatedVersion1(t *testing.T) {
	url := testenv.PostgresURL(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	v1, err := fs.ReadFile(migrationFiles, "migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)`,
		string(v1),
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', now())`,
		`INSERT INTO links (code, url, redirect, created_at, clicks) VALUES ('oldlink', 'https://example.com/old', 302, now(), 5)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%.40s...: %v", q, err)
		}
	}
	s := openTest(t, url)
	rows, err := s.pool.Query(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	if n := migrationCount(t); len(versions) != n || versions[0] != 1 || int(versions[n-1]) != n {
		t.Fatalf("schema versions %v, want 1 to %d", versions, n)
	}
	if err := s.AddClicks(ctx, map[string]int64{"oldlink": 2}); err != nil {
		t.Fatal(err)
	}
	l, err := s.GetLink(ctx, "oldlink")
	if err != nil {
		t.Fatal(err)
	}
	if l.URL != "https://example.com/old" || l.Clicks != 7 {
		t.Fatalf("link after migration: %+v, want its URL and 7 clicks", l)
	}
	checkFillfactor(t, s)
}

// checkFillfactor fails t unless links carries the fillfactor of migration
// 0002.
func checkFillfactor(t *testing.T, s *Store) {
	t.Helper()
	var opts []string
	if err := s.pool.QueryRow(t.Context(), "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'links'::regclass").Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts, "fillfactor=80") {
		t.Fatalf("links reloptions %q, want fillfactor=80", opts)
	}
}

// migrationCount is the number of embedded migrations (at least the two
// these tests rely on).
func migrationCount(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil || len(files) < 2 {
		t.Fatalf("embedded migrations: %v, %v", files, err)
	}
	return len(files)
}
