package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURL returns the URL of a fresh, empty database for this test, dropped
// when tb ends. The server is the one LINKGATE_TEST_POSTGRES_URL names, or a
// cluster started for tb.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(EnvPostgresURL)
	if base == "" {
		base = StartPostgres(tb).URL()
	}
	return freshDatabase(tb, base)
}

// freshDatabase creates a uniquely named database on the server of base and
// returns base with that database.
func freshDatabase(tb testing.TB, base string) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "lgtest_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		Unavailable(tb, "connect to PostgreSQL %s: %v", redact(base), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Logf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", redact(base), err)
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Postgres is a PostgreSQL cluster this test started in a temporary directory
// on a loopback port, with trust authentication for user postgres.
type Postgres struct {
	Port   int
	tb     testing.TB
	bindir string
	data   string
	owner  *user.User // the non-root user that runs the server when we are root
	cmd    *exec.Cmd
}

// StartPostgres initialises and starts a private cluster and stops it when tb
// ends. Use it when the test must stop or restart PostgreSQL; otherwise use
// PostgresURL.
func StartPostgres(tb testing.TB) *Postgres {
	tb.Helper()
	bindir := postgresBinDir()
	if bindir == "" {
		Unavailable(tb, "PostgreSQL server binaries (initdb, postgres) not found")
	}
	p := &Postgres{Port: FreePort(tb), tb: tb, bindir: bindir}
	dir, err := os.MkdirTemp("", "lgtest-pg-")
	if err != nil {
		tb.Fatalf("temp dir: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	p.data = filepath.Join(dir, "data")
	if os.Geteuid() == 0 { // initdb and postgres refuse to run as root
		if p.owner, err = user.Lookup("postgres"); err != nil {
			Unavailable(tb, "running as root and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(p.owner.Uid)
		gid, _ := strconv.Atoi(p.owner.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatalf("chown %s: %v", dir, err)
		}
	}
	if out, err := p.command(filepath.Join(bindir, "initdb"), "-D", p.data, "-U", "postgres",
		"--auth=trust", "--no-sync", "-E", "UTF8").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	p.Start()
	tb.Cleanup(p.Stop)
	return p
}

// URL is the postgres:// URL of the cluster's postgres database.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (p *Postgres) Start() {
	p.tb.Helper()
	if p.cmd != nil {
		p.tb.Fatalf("postgres on %d already running", p.Port)
	}
	cmd := p.command(filepath.Join(p.bindir, "postgres"), "-D", p.data, "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=on")
	if err := cmd.Start(); err != nil {
		p.tb.Fatalf("start postgres: %v", err)
	}
	p.cmd = cmd
	WaitFor(p.tb, 30*time.Second, "postgres on port "+strconv.Itoa(p.Port), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, p.URL())
		if err != nil {
			return false
		}
		c.Close(ctx)
		return true
	})
}

// Stop stops the server with a fast shutdown (SIGINT) and waits for it. It is
// a no-op when the server is not running.
func (p *Postgres) Stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.owner != nil {
		uid, _ := strconv.Atoi(p.owner.Uid)
		gid, _ := strconv.Atoi(p.owner.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		cmd.Dir = os.TempDir()
	}
	return cmd
}

// postgresBinDir finds the directory holding initdb and postgres.
func postgresBinDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := string(out[:len(out)-1])
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d
		}
	}
	return ""
}

// LockTable takes an ACCESS EXCLUSIVE lock on table in the database at
// databaseURL, from a connection of its own, so that every statement on the
// table waits (a stuck database, as far as that table goes). The returned
// function releases the lock; it is safe to call more than once, and runs
// at the end of tb if not called before.
func LockTable(tb testing.TB, databaseURL, table string) (release func()) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatalf("lock %s: %v", table, err)
	}
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE")
	}
	if err != nil {
		conn.Close(ctx)
		tb.Fatalf("lock %s: %v", table, err)
	}
	var once bool
	release = func() {
		if once {
			return
		}
		once = true
		if err := tx.Rollback(ctx); err != nil {
			tb.Errorf("release the lock on %s: %v", table, err)
		}
		conn.Close(ctx)
	}
	tb.Cleanup(release)
	return release
}

// LockWaiters is the number of sessions of databaseURL's database waiting
// for a lock on table (e.g. behind LockTable).
func LockWaiters(tb testing.TB, databaseURL, table string) int {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatalf("lock waiters on %s: %v", table, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass($1) AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", table).Scan(&n); err != nil {
		tb.Fatalf("lock waiters on %s: %v", table, err)
	}
	return n
}
