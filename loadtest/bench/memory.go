package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/linkgate/linkgate/internal/store/sqlite"
)

// memRow is resident memory with N links resolved into the LRU.
type memRow struct {
	Links         int     // links resolved into the LRU in this step (cumulative)
	Entries       float64 // LRU entries added since the baseline (linkgate_cache_entries{layer="lru"})
	RSS0, RSS     int64   // VmRSS at the baseline and now
	Heap0, Heap   float64 // go_memstats_heap_inuse_bytes at the baseline and now
	MeanURL       float64 // mean URL length in bytes
	PerLink       float64 // (RSS - RSS0) / Entries
	BeyondURL     float64 // PerLink - MeanURL
	HeapPerLink   float64 // (Heap - Heap0) / Entries
	Resolve       resolveStats
	Incomplete    bool
	MaxBeyondURL  float64 // the target; 0: none
	SeedDuration  time.Duration
	SeedTotal     int
	ResolvedCodes int
}

// memCode is the i-th memory-benchmark code: 7 base62 digits of
// i*2654435761 mod 62^7. The multiplier is coprime to 62^7, so codes are
// distinct, and consecutive ones look random.
func memCode(i int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	const space = 62 * 62 * 62 * 62 * 62 * 62 * 62
	v := (uint64(i) * 2654435761) % space
	var b [7]byte
	for k := 6; k >= 0; k-- {
		b[k] = alphabet[v%62]
		v /= 62
	}
	return string(b[:])
}

// memURL is the i-th memory-benchmark URL (about 90 bytes).
func memURL(i int) string {
	return fmt.Sprintf("https://example.com/articles/%08d/a-moderately-long-article-slug?utm_source=bench&utm_medium=memory", i)
}

// seedSQLite creates the schema with linkgate's own migrations (by opening
// the store once), then inserts n links directly in one transaction. This
// is bench-only: the API would fsync once per link.
func seedSQLite(ctx context.Context, path string, n int) error {
	st, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO links (code, url, redirect, created_at) VALUES (?, ?, 302, ?)")
	if err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	now := time.Now().UnixMicro()
	for i := range n {
		if _, err := stmt.ExecContext(ctx, memCode(i), memURL(i), now); err != nil {
			return fmt.Errorf("seed sqlite: link %d: %w", i, err)
		}
	}
	if err := stmt.Close(); err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("seed sqlite: %w", err)
	}
	return nil
}

// memory measures resident memory of an embedded linkgate as its LRU fills
// with the largest -memory-links count, reading VmRSS at each smaller count
// on the way. The resolution passes double as the embedded cold-cache run.
func (h *harness) memory(ctx context.Context) ([]memRow, []coldRow, error) {
	sizes := slices.Clone(h.o.MemLinks)
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	total := sizes[len(sizes)-1]
	const warm = 1000 // codes resolved before the baseline reading, not measured

	path := filepath.Join(h.tmp, "memory.db")
	h.logf("memory: seeding %d links into SQLite directly", total+warm)
	t0 := time.Now()
	if err := seedSQLite(ctx, path, total+warm); err != nil {
		return nil, nil, err
	}
	seedDur := time.Since(t0)
	h.logf("memory: seeded in %v", seedDur.Round(time.Millisecond))

	lg, err := h.startLinkgate(ctx, "lg-memory", "LINKGATE_DATABASE_URL=sqlite://"+path,
		fmt.Sprintf("LINKGATE_CACHE_SIZE=%d", total+total/10+warm), "LINKGATE_CACHE_TTL=1h")
	if err != nil {
		return nil, nil, err
	}
	defer h.sup.stop(lg.proc, 10*time.Second)

	codes := make([]string, total+warm)
	var urlBytes float64
	for i := range codes {
		codes[i] = memCode(i)
		if i < total {
			urlBytes += float64(len(memURL(i)))
		}
	}
	// Warm-up: connections, the runtime, SQLite's read connections and a
	// few links, so the baseline is a running server with an empty cache.
	if err := hammer(ctx, lg.addr, "/live", h.o.Connections, 2*time.Second); err != nil {
		return nil, nil, err
	}
	if _, err := resolveAll(ctx, lg.addr, codes[total:], h.o.Connections, time.Now().Add(time.Minute)); err != nil {
		return nil, nil, err
	}
	rss0, entries0, heap0, err := h.memSettle(ctx, lg)
	if err != nil {
		return nil, nil, err
	}
	h.logf("memory: baseline RSS %.1f MiB, %v LRU entries", float64(rss0)/(1<<20), entries0)

	var rows []memRow
	var colds []coldRow
	deadline := time.Now().Add(h.o.MemTimeout)
	done := 0
	for _, n := range sizes {
		h.logf("memory: resolving links %d..%d", done, n)
		st, err := resolveAll(ctx, lg.addr, codes[done:n], h.o.Connections, deadline)
		if err != nil {
			return nil, nil, err
		}
		incomplete := st.Done < n-done
		colds = append(colds, coldRow{
			Name:  fmt.Sprintf("cold: embedded, links %d to %d (SQLite read, LRU fill; memory run)", done, n),
			Codes: st.Done, Stats: st,
		})
		done += st.Done
		rss, entries, heap, err := h.memSettle(ctx, lg)
		if err != nil {
			return nil, nil, err
		}
		added := entries - entries0
		r := memRow{
			Links: done, Entries: added, RSS0: rss0, RSS: rss, Heap0: heap0, Heap: heap,
			MeanURL: urlBytes / float64(total), Resolve: st, Incomplete: incomplete,
			SeedDuration: seedDur, SeedTotal: total + warm, ResolvedCodes: done,
		}
		if added > 0 {
			r.PerLink = float64(rss-rss0) / added
			r.BeyondURL = r.PerLink - r.MeanURL
			r.HeapPerLink = (heap - heap0) / added
		}
		if n == 1000000 {
			r.MaxBeyondURL = 200
		}
		rows = append(rows, r)
		h.logf("memory: %d links: RSS %.1f MiB, %.0f entries added, %.0f B/link, %.0f B/link beyond the URL",
			done, float64(rss)/(1<<20), added, r.PerLink, r.BeyondURL)
		if incomplete {
			break
		}
	}
	return rows, colds, nil
}

// memSettle waits for the click flush that follows a resolution pass, then
// for VmRSS to stop moving (two readings a second apart within 0.5%, at most
// 15 s), and returns VmRSS, LRU entries and Go heap in use.
func (h *harness) memSettle(ctx context.Context, lg *server) (int64, float64, float64, error) {
	wait := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := wait(2500 * time.Millisecond); err != nil { // click flush interval is 1 s
		return 0, 0, 0, err
	}
	prev, err := rssBytes(lg.proc.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if err := wait(time.Second); err != nil {
			return 0, 0, 0, err
		}
		cur, err := rssBytes(lg.proc.pid())
		if err != nil {
			return 0, 0, 0, err
		}
		stable := abs(cur-prev) <= prev/200
		prev = cur
		if stable {
			break
		}
	}
	m, err := getBody("http://" + lg.addr + "/metrics")
	if err != nil {
		return 0, 0, 0, err
	}
	entries, ok := metricSum(m, "linkgate_cache_entries", `layer="lru"`)
	if !ok {
		return 0, 0, 0, fmt.Errorf(`memory: no linkgate_cache_entries{layer="lru"} in /metrics`)
	}
	heap, _ := metricSum(m, "go_memstats_heap_inuse_bytes")
	return prev, entries, heap, nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
