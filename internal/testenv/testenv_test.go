package testenv

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartRedisKillRestart(t *testing.T) {
	r := StartRedis(t)
	if !dialable(r.Addr()) {
		t.Fatal("redis not reachable after start")
	}
	r.Kill()
	if dialable(r.Addr()) {
		t.Fatal("redis still reachable after kill")
	}
	r.Start()
	if !dialable(r.Addr()) {
		t.Fatal("redis not reachable after restart")
	}
}

func TestPostgresURLGivesEmptyDatabase(t *testing.T) {
	u := PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("fresh database has %d tables", n)
	}
}

func TestStartPostgresStopStart(t *testing.T) {
	p := StartPostgres(t)
	p.Stop()
	if dialable("127.0.0.1:" + itoa(p.Port)) {
		t.Fatal("postgres reachable after stop")
	}
	p.Start()
}

func itoa(i int) string { return strconv.Itoa(i) }
