// Package postgres implements linkgate's store (the Store interface of package
// internal/store) on PostgreSQL with jackc/pgx/v5 and its connection pool.
//
// Every connection runs with synchronous_commit=on (set in the connection's
// startup parameters, so a server or role default cannot weaken it): a commit
// returns after its WAL record is flushed, so a method that returned nil is
// durable; concurrent creates share statements and commits (group commit, see
// maxCreateBatch) without changing that. Several linkgate instances may share
// one database: the unique index on links.code decides concurrent creates of
// one code (batches insert in code order, so two cannot deadlock), AddClicks
// batches run one at a time under a transaction-scoped advisory lock so
// concurrent ones cannot deadlock (between instances of this version; see
// AddClicks for a rolling upgrade), and migrations run under a session
// advisory lock so instances starting together do not race.
//
// Times are timestamptz (microsecond precision) and read back in UTC.
//
// A *Store is safe for concurrent use by any number of goroutines.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures Open.
type Config struct {
	// URL is a postgres:// or postgresql:// URL, or a key=value connection
	// string (required). It may carry pgx pool settings such as
	// pool_max_conns (default max(4, NumCPU)).
	URL string
	// Logger receives the open report (server version) and applied
	// migrations. Nil discards.
	Logger *slog.Logger
	// Now is the clock AddClicks stamps links' UpdatedAt with. Default:
	// time.Now.
	Now func() time.Time
}

func (c *Config) defaults() error {
	if c.URL == "" {
		return errors.New("postgres: Config.URL is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Store is a store.Store on a PostgreSQL database. Make it with Open.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time

	creates createQueue

	closeOnce sync.Once
}

// Open connects, checks that the server answers, applies pending migrations
// (under an advisory lock) and returns the Store. The caller must Close it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgx's parse errors do not repeat the password.
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	pc.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = "linkgate"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &Store{pool: pool, log: cfg.Logger, now: cfg.Now}
	s.creates.slots = max(1, int(pc.MaxConns)/2) // the rest of the pool stays free for reads
	var version string
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres %s/%s: %w", pc.ConnConfig.Host, pc.ConnConfig.Database, err)
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres %s/%s: %w", pc.ConnConfig.Host, pc.ConnConfig.Database, err)
	}
	s.log.Info("postgres store opened", "host", pc.ConnConfig.Host, "database", pc.ConnConfig.Database,
		"server_version", version, "max_conns", pc.MaxConns, "synchronous_commit", "on")
	return s, nil
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use to be returned. It is
// idempotent and always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}
