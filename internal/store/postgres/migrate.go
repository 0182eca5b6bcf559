package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/linkgate/linkgate/internal/store/internal/migrate"
)

// migrationFiles holds the schema, one numbered file per change.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the pg_advisory_lock key that serialises migrations of one
// database ("linkgate" in ASCII). Advisory locks are per database, so
// databases on one server do not wait for each other.
const migrationLock int64 = 0x6c696e6b67617465

// migrate applies the migrations schema_migrations does not list yet. It holds
// a session advisory lock on one pooled connection for the whole run, so when
// several instances start at once one migrates and the others wait, then find
// everything applied. Each migration and its schema_migrations row commit in
// one transaction on that connection. Running it again is a no-op.
func (s *Store) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := migrate.Load(sub)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		// pgx closes a connection whose query was cancelled, which releases
		// the lock if the server granted it after all.
		conn.Release()
		return fmt.Errorf("migrate: take advisory lock: %w", err)
	}
	defer unlock(ctx, conn)

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	applied := make(map[int]bool)
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	newest := 0
	for _, v := range versions {
		applied[int(v)] = true
		newest = max(newest, int(v))
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.Version, m.Name, time.Now())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.Name, err)
		}
		s.log.Info("applied migration", "store", "postgres", "version", m.Version, "name", m.Name)
	}
	if known := ms[len(ms)-1].Version; newest > known {
		s.log.Warn("database schema is newer than this binary", "store", "postgres",
			"schema_version", newest, "binary_version", known)
	}
	return nil
}

// unlock releases the advisory lock and returns conn to the pool. If the
// unlock fails the session may still hold the lock, so the connection is
// closed instead, which releases it on the server.
func unlock(ctx context.Context, conn *pgxpool.Conn) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var ok bool
	if err := conn.QueryRow(uctx, "SELECT pg_advisory_unlock($1)", migrationLock).Scan(&ok); err != nil || !ok {
		_ = conn.Hijack().Close(uctx)
		return
	}
	conn.Release()
}
