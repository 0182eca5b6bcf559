package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/linkgate/linkgate/internal/store/postgres"
	"github.com/linkgate/linkgate/internal/store/sqlite"
)

// Options configures Open.
type Options struct {
	// Logger receives each driver's open report and applied migrations.
	// Nil discards.
	Logger *slog.Logger
}

// Open opens the store databaseURL names and applies pending migrations
// before returning. The caller must Close it.
//
//   - sqlite://PATH opens the SQLite file PATH (created when missing; its
//     directory must exist). Everything after "sqlite://" is the path, taken
//     literally (no percent-decoding, no ~ expansion): sqlite://linkgate.db
//     and sqlite://data/links.db are relative to the working directory,
//     sqlite:///var/lib/linkgate/links.db is absolute. A path may not contain
//     '?', and in-memory databases are refused.
//   - postgres://... and postgresql://... open PostgreSQL with the URL as
//     given (libpq/pgx parameters such as sslmode and pool_max_conns apply).
//
// Any other scheme is an error naming it. Errors never repeat the URL, which
// may hold a password.
func Open(ctx context.Context, databaseURL string, opts Options) (Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	scheme, rest, ok := strings.Cut(databaseURL, "://")
	if !ok || !validScheme(scheme) {
		return nil, fmt.Errorf("open store: database URL must start with sqlite:// or postgres://")
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		if rest == "" {
			return nil, fmt.Errorf("open store: sqlite:// URL has no path (want sqlite://PATH)")
		}
		s, err := sqlite.Open(ctx, sqlite.Config{Path: rest, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return s, nil
	case "postgres", "postgresql":
		s, err := postgres.Open(ctx, postgres.Config{URL: databaseURL, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("open store: unsupported database URL scheme %q (want sqlite:// or postgres://)", scheme)
	}
}

// validScheme reports whether s is an RFC 3986 scheme, and so safe to show
// (it cannot hold a password).
func validScheme(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return s != ""
}
