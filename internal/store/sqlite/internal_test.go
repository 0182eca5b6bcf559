package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type pragmas struct {
	journal  string
	sync     int
	fk       int
	busy     int
	readOnly int
}

func readPragmas(t *testing.T, c *sql.Conn) pragmas {
	t.Helper()
	var p pragmas
	for _, q := range []struct {
		sql  string
		dest any
	}{
		{"PRAGMA journal_mode", &p.journal},
		{"PRAGMA synchronous", &p.sync},
		{"PRAGMA foreign_keys", &p.fk},
		{"PRAGMA busy_timeout", &p.busy},
		{"PRAGMA query_only", &p.readOnly},
	} {
		if err := c.QueryRowContext(t.Context(), q.sql).Scan(q.dest); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	return p
}

func checkPragmas(t *testing.T, what string, got pragmas, readOnly int) {
	t.Helper()
	want := pragmas{journal: "wal", sync: 2, fk: 1, busy: 5000, readOnly: readOnly}
	got.journal = strings.ToLower(got.journal)
	if got != want {
		t.Errorf("%s: pragmas %+v, want %+v", what, got, want)
	}
}

// TestEveryConnectionIsDurable checks the settings on more than the first
// connection of each pool: synchronous and busy_timeout are per connection,
// so setting them once with Exec would leave later connections at defaults.
func TestEveryConnectionIsDurable(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "p.db"))
	ctx := t.Context()

	// Read pool: hold one connection so the pool must open a second.
	c1, err := s.r.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := s.r.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	checkPragmas(t, "first read connection", readPragmas(t, c1), 1)
	checkPragmas(t, "second read connection", readPragmas(t, c2), 1)
	if _, err := c2.ExecContext(ctx, "CREATE TABLE nope (x)"); err == nil {
		t.Error("a read connection could write")
	}

	// Write pool: discard its connection so the pool opens a new one.
	w1, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkPragmas(t, "first write connection", readPragmas(t, w1), 0)
	_ = w1.Raw(func(any) error { return driver.ErrBadConn }) // tells database/sql to drop it
	_ = w1.Close()
	if got := s.w.Stats().OpenConnections; got != 0 {
		t.Fatalf("write pool still has %d connections after discarding one", got)
	}
	w2, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	checkPragmas(t, "second write connection", readPragmas(t, w2), 0)
	if got := s.w.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("write pool allows %d connections, want 1", got)
	}
}

func TestSQLiteVersion(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "v.db"))
	var v string
	if err := s.r.QueryRowContext(t.Context(), "SELECT sqlite_version()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if !versionAtLeast(v, MinVersion) {
		t.Fatalf("SQLite %s is older than %s", v, MinVersion)
	}
	t.Logf("SQLite %s", v)
}

func TestVersionAtLeast(t *testing.T) {
	tests := map[string]bool{
		"3.50.2": true, "3.50.10": true, "3.51.0": true, "4.0": true, "3.54.1": true,
		"3.50.1": false, "3.49.99": false, "3.5.2": false, "2.99.99": false, "3.50": false,
	}
	for v, want := range tests {
		if got := versionAtLeast(v, "3.50.2"); got != want {
			t.Errorf("versionAtLeast(%q, 3.50.2) = %v, want %v", v, got, want)
		}
	}
}

func TestMigrationsAreIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	for i := range 3 {
		s, err := Open(t.Context(), Config{Path: path})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var n, maxV int
		if err := s.r.QueryRowContext(t.Context(), "SELECT count(*), max(version) FROM schema_migrations").Scan(&n, &maxV); err != nil {
			t.Fatal(err)
		}
		if n != 1 || maxV != 1 {
			t.Fatalf("open %d: schema_migrations has %d rows, max version %d; want 1, 1", i, n, maxV)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]Config{
		"no path":        {},
		"memory":         {Path: ":memory:"},
		"file uri":       {Path: "file:" + filepath.Join(dir, "x.db")},
		"query in path":  {Path: filepath.Join(dir, "x.db") + "?_pragma=synchronous(OFF)"},
		"missing dir":    {Path: filepath.Join(dir, "no", "such", "dir", "x.db")},
		"negative conns": {Path: filepath.Join(dir, "y.db"), ReadConns: -1},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Open(context.Background(), cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
		})
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "c.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
}

// TestWritersNeverSeeBusy runs concurrent writers and readers with a 1 ms
// busy_timeout, so any lock contention between this Store's own connections
// would surface as SQLITE_BUSY. With one write connection there is none.
func TestWritersNeverSeeBusy(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "busy.db"), BusyTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	const workers, each = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				code := fmt.Sprintf("busy-%d-%d", w, i)
				l := &links.Link{Code: code, URL: "https://example.com/", Redirect: links.RedirectFound}
				if err := s.CreateLink(ctx, l); err != nil {
					errs <- err
				}
				if err := s.AddClicks(ctx, map[string]int64{code: 1, "busy-0-0": 1}); err != nil {
					errs <- err
				}
				if _, err := s.ListLinks(ctx, links.ListParams{Limit: 20}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The click flush joins the JSON to links only when SQLite would search
// links by the code index for each member; after an ANALYZE of a small table
// it would walk the JSON for every link, so the flush falls back to an
// UPDATE per code, and the counts come out the same either way.
func TestAddClicksPlan(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "plan.db"))
	ctx := t.Context()
	indexed := func() bool {
		t.Helper()
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		ok, err := clickJoinIndexed(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !indexed() {
		t.Fatal("an empty table without statistics: the join is not the indexed one")
	}
	var want int64
	flush := func(what string) {
		t.Helper()
		counts := map[string]int64{}
		for i := range 10 {
			counts[fmt.Sprintf("plan%04d", i)] = 2
		}
		counts["plan-ghost"] = 1
		if err := s.AddClicks(ctx, counts); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want += 2
		var got int64
		if err := s.w.QueryRowContext(ctx, "SELECT clicks FROM links WHERE code = 'plan0007'").Scan(&got); err != nil || got != want {
			t.Fatalf("%s: plan0007 has %d clicks (%v), want %d", what, got, err, want)
		}
	}
	stored := map[string]int64{}
	for i := range 10 {
		stored[fmt.Sprintf("plan%04d", i)] = 0
	}
	insertLinks(t, s, stored)
	if !indexed() {
		t.Fatal("10 links without statistics: the join is not the indexed one")
	}
	flush("joined")
	if _, err := s.w.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	if indexed() {
		t.Fatal("10 links analysed: the join is taken for indexed; it scans links (SQLite changed its plan? then this test needs a new case)")
	}
	flush("one UPDATE per code")
}

// A flush whose second statement fails writes nothing: the first chunk's
// counts are rolled back with it.
func TestAddClicksFailedChunkRollsBack(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "rollback.db"))
	ctx := t.Context()
	stored := make(map[string]int64, addClicksChunk+1)
	counts := make(map[string]int64, addClicksChunk+1)
	for i := range addClicksChunk + 1 {
		code := fmt.Sprintf("rb%05d", i) // sorted: the last one goes in the second statement
		stored[code] = 0
		counts[code] = 1
	}
	stored[fmt.Sprintf("rb%05d", addClicksChunk)] = math.MaxInt64 // adding to it overflows
	insertLinks(t, s, stored)
	if err := s.AddClicks(ctx, counts); err == nil {
		t.Fatal("AddClicks overflowing a count returned nil")
	}
	var sum int64
	if err := s.w.QueryRowContext(ctx, "SELECT sum(clicks) FROM links WHERE code < ?", fmt.Sprintf("rb%05d", addClicksChunk)).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 0 {
		t.Fatalf("the first statement's %d clicks stayed after the flush failed", sum)
	}
}

// A flush of more codes than one statement carries adds every count once,
// and codes JSON has to escape (or that are not UTF-8) match themselves.
func TestAddClicksChunksAndOddCodes(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "chunks.db"))
	ctx := t.Context()
	odd := []string{`q"uote`, `back\slash`, "ctl\x01\x1f", "tab\there", "bad\xff\xfe", "ünï", "emoji😀"}
	codes := append([]string{}, odd...)
	for i := range 2*addClicksChunk + 5 {
		codes = append(codes, fmt.Sprintf("chunk%05d", i))
	}
	stored := make(map[string]int64, len(codes))
	for _, c := range codes {
		stored[c] = 1
	}
	insertLinks(t, s, stored)
	counts := make(map[string]int64, len(codes)+1)
	for i, c := range codes {
		counts[c] = int64(i + 1)
	}
	counts["chunk-ghost"] = 5
	if err := s.AddClicks(ctx, counts); err != nil {
		t.Fatal(err)
	}
	for _, c := range codes {
		l, err := s.GetLink(ctx, c)
		if err != nil {
			t.Fatalf("%q: %v", c, err)
		}
		if l.Clicks != 1+counts[c] {
			t.Fatalf("%q has %d clicks, want %d", c, l.Clicks, 1+counts[c])
		}
	}
	var n int
	if err := s.w.QueryRowContext(ctx, "SELECT count(*) FROM links").Scan(&n); err != nil || n != len(codes) {
		t.Fatalf("%d links after the flush (%v), want %d", n, err, len(codes))
	}
}

// insertLinks stores a link for each code with its clicks, in one
// transaction and without CreateLink's checks (so codes CreateLink's callers
// would refuse can be stored too).
func insertLinks(t *testing.T, s *Store, clicks map[string]int64) {
	t.Helper()
	tx, err := s.w.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	for code, n := range clicks {
		if _, err := tx.ExecContext(t.Context(),
			"INSERT INTO links (code, url, redirect, created_at, clicks) VALUES (?, 'https://example.com/', 302, 0, ?)", code, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
