package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/linkgate/linkgate/internal/store/internal/migrate"
)

// migrationFiles holds the schema, one numbered file per change.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrate applies the migrations schema_migrations does not list yet, each in
// its own BEGIN IMMEDIATE transaction together with its schema_migrations row.
// The version check runs inside that transaction, so another process opening
// the same file at the same moment waits for the lock and then skips what we
// applied. Running it again is a no-op.
func (s *Store) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := migrate.Load(sub)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	for _, m := range ms {
		applied, err := s.applyMigration(ctx, m)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.Name, err)
		}
		if applied {
			s.log.Info("applied migration", "store", "sqlite", "version", m.Version, "name", m.Name)
		}
	}
	var newest sql.NullInt64
	if err := s.w.QueryRowContext(ctx, "SELECT max(version) FROM schema_migrations").Scan(&newest); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if known := ms[len(ms)-1].Version; newest.Int64 > int64(known) {
		s.log.Warn("database schema is newer than this binary", "store", "sqlite",
			"schema_version", newest.Int64, "binary_version", known)
	}
	return nil
}

// applyMigration applies m unless it is recorded, and reports whether it did.
func (s *Store) applyMigration(ctx context.Context, m migrate.Migration) (applied bool, err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		if !applied {
			_ = tx.Rollback()
		}
	}()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE version = ?", m.Version).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.Version, m.Name, time.Now().UnixMicro()); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}
