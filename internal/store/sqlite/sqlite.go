// Package sqlite implements linkgate's store (the Store interface of package
// internal/store) on one SQLite file, with the pure-Go driver
// modernc.org/sqlite, so the binary stays static (CGO_ENABLED=0).
//
// # Durability
//
// Every connection runs with journal_mode=WAL and synchronous=FULL: a commit
// returns only after the write-ahead log has been fsynced, so a method that
// returned nil survives a kill -9 or a power cut. foreign_keys=on and a
// busy_timeout (Config.BusyTimeout) are set on every connection too. All of it
// is set through the DSN's _pragma parameters, which the driver applies to each
// connection it opens, not once on whichever connection happened to run a
// PRAGMA statement (synchronous and busy_timeout are per connection; only
// journal_mode is stored in the file).
//
// # Two pools, one writer
//
// SQLite allows one writer per database file at a time. With several
// connections writing, the losers wait inside SQLite's busy handler and can
// still fail with SQLITE_BUSY: at once when a deferred transaction tries to
// upgrade a read lock to a write lock, and after busy_timeout under load.
// A Store therefore opens the file twice through database/sql:
//
//   - a write pool of exactly one connection (transactions start with BEGIN
//     IMMEDIATE via _txlock=immediate). Writers queue for that connection in
//     Go, honouring their contexts, and never contend for SQLite's lock, so a
//     caller never sees SQLITE_BUSY because of another goroutine of this Store.
//   - a read pool of several connections opened with query_only. In WAL mode
//     readers see the last committed state, never block the writer and are
//     never blocked by it, so reads run in parallel with the single writer and
//     see every write that has returned.
//
// busy_timeout remains for locks held by other processes (the sqlite3 shell, a
// backup tool, a second linkgate on the same file, which this package does not
// otherwise support) and for WAL recovery after a crash.
//
// Times are stored as INTEGER unix microseconds and read back in UTC, so they
// round-trip exactly at microsecond precision.
//
// A *Store is safe for concurrent use by any number of goroutines.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// MinVersion is the oldest SQLite library this package is meant to run on
// (3.50.2 fixes CVE-2025-6965). Open logs a warning when the linked library is
// older; the tests fail.
const MinVersion = "3.50.2"

// Config configures Open.
type Config struct {
	// Path is the database file, absolute or relative to the working
	// directory (required). The file is created when missing; its directory
	// must exist. It may not contain '?' (the driver would read the rest as
	// DSN parameters), and in-memory databases (":memory:", "file:" URIs)
	// are refused because the read and write pools must share one file.
	Path string
	// Logger receives the open report (path, SQLite version) and applied
	// migrations. Nil discards.
	Logger *slog.Logger
	// ReadConns is the size of the read pool. Default: max(4, GOMAXPROCS).
	ReadConns int
	// BusyTimeout is how long a connection waits for a lock held by another
	// process before failing with SQLITE_BUSY. Default: 5s. It must be at
	// least a millisecond.
	BusyTimeout time.Duration
	// Now is the clock AddClicks stamps links' UpdatedAt with. Default:
	// time.Now.
	Now func() time.Time
}

func (c *Config) defaults() error {
	if c.Path == "" {
		return errors.New("sqlite: Config.Path is required")
	}
	if strings.ContainsRune(c.Path, '?') {
		return fmt.Errorf("sqlite: path %q may not contain '?'", c.Path)
	}
	if c.Path == ":memory:" || strings.HasPrefix(c.Path, "file:") {
		return fmt.Errorf("sqlite: path %q: in-memory databases and file: URIs are not supported; give a file path", c.Path)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.ReadConns < 0 {
		return fmt.Errorf("sqlite: Config.ReadConns %d is negative", c.ReadConns)
	}
	if c.ReadConns == 0 {
		c.ReadConns = max(4, runtime.GOMAXPROCS(0))
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = 5 * time.Second
	}
	if c.BusyTimeout < time.Millisecond {
		return fmt.Errorf("sqlite: Config.BusyTimeout %v is below 1ms", c.BusyTimeout)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Store is a store.Store on one SQLite file. Make it with Open.
type Store struct {
	w   *sql.DB // exactly one connection: every write goes through it
	r   *sql.DB // query_only connections for reads
	log *slog.Logger
	now func() time.Time

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the database file, checks that WAL and
// synchronous=FULL are in force, applies pending migrations and returns the
// Store. The caller must Close it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Store{log: cfg.Logger, now: cfg.Now}

	w, err := sql.Open("sqlite", dsn(cfg.Path, cfg.BusyTimeout, false))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s.w = w

	version, err := s.checkWriter(ctx)
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}
	if err := s.migrate(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}

	// The read pool is opened after the writer has switched the file to WAL,
	// so readers never race to change the journal mode.
	r, err := sql.Open("sqlite", dsn(cfg.Path, cfg.BusyTimeout, true))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}
	r.SetMaxOpenConns(cfg.ReadConns)
	r.SetMaxIdleConns(cfg.ReadConns)
	r.SetConnMaxLifetime(0)
	r.SetConnMaxIdleTime(0)
	s.r = r
	if err := r.PingContext(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open sqlite %s: read pool: %w", cfg.Path, err)
	}

	s.log.Info("sqlite store opened", "path", cfg.Path, "sqlite_version", version,
		"journal_mode", "wal", "synchronous", "full", "read_conns", cfg.ReadConns)
	if !versionAtLeast(version, MinVersion) {
		s.log.Warn("sqlite library older than supported", "sqlite_version", version, "min_version", MinVersion)
	}
	return s, nil
}

// dsn is the driver name for path: the PRAGMAs every connection needs, plus
// BEGIN IMMEDIATE for the writer and query_only for readers. The _pragma
// values run in order, busy_timeout first so that the journal-mode switch
// can wait for a lock.
func dsn(path string, busy time.Duration, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		q.Set("_txlock", "immediate")
	}
	return path + "?" + q.Encode()
}

// checkWriter opens the write connection and verifies its settings, returning
// sqlite_version().
func (s *Store) checkWriter(ctx context.Context) (string, error) {
	var version, mode string
	var syncMode int
	if err := s.w.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&version); err != nil {
		return "", fmt.Errorf("sqlite_version: %w", err)
	}
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return "", fmt.Errorf("journal_mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return "", fmt.Errorf("journal_mode is %q, not wal (does the file system support WAL?)", mode)
	}
	if err := s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
		return "", fmt.Errorf("synchronous: %w", err)
	}
	if syncMode != 2 {
		return "", fmt.Errorf("synchronous is %d, not 2 (FULL)", syncMode)
	}
	return version, nil
}

// Ping checks that the database file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	return nil
}

// Close closes both pools. It waits for connections in use to be returned.
// Closing the last connection checkpoints the WAL into the main file. Close
// is idempotent; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		errs = append(errs, s.w.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close sqlite: %w", err)
		}
	})
	return s.closeErr
}

// versionAtLeast reports whether dotted version v is >= want ("3.50.2").
// Unparseable parts count as 0.
func versionAtLeast(v, want string) bool {
	a, b := strings.Split(v, "."), strings.Split(want, ".")
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x, _ = strconv.Atoi(a[i])
		}
		if i < len(b) {
			y, _ = strconv.Atoi(b[i])
		}
		if x != y {
			return x > y
		}
	}
	return true
}
