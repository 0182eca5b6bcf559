package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/testenv"
)

// held is a Store whose INSERTs into links wait: another connection holds
// a SHARE lock on the table and every create slot is taken by a create
// blocked on it, so the next CreateLink calls queue in Go.
type held struct {
	s       *Store
	lock    pgx.Tx
	fillers sync.WaitGroup
	errs    chan error
}

func holdCreates(t *testing.T, s *Store) *held {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), s.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "LOCK TABLE links IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	h := &held{s: s, lock: tx, errs: make(chan error, s.creates.slots)}
	for i := range s.creates.slots {
		h.fillers.Go(func() {
			h.errs <- s.CreateLink(context.Background(), newLink(fmt.Sprintf("slot%03d", i), "https://example.com/slot"))
		})
	}
	testenv.WaitFor(t, 10*time.Second, "every create slot to be taken", func() bool {
		q := &s.creates
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.running == q.slots
	})
	return h
}

// queue starts a CreateLink of l under ctx and returns its outcome's channel.
func (h *held) queue(ctx context.Context, l *links.Link) <-chan error {
	c := make(chan error, 1)
	go func() { c <- h.s.CreateLink(ctx, l) }()
	return c
}

// waitQueued waits until n calls are queued.
func (h *held) waitQueued(t *testing.T, n int) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%d creates to queue", n), func() bool {
		h.s.creates.mu.Lock()
		defer h.s.creates.mu.Unlock()
		return len(h.s.creates.waiting) == n
	})
}

// release drops the table lock and checks the slot fillers succeeded.
func (h *held) release(t *testing.T) {
	t.Helper()
	if err := h.lock.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.fillers.Wait()
	for range h.s.creates.slots {
		if err := <-h.errs; err != nil {
			t.Fatalf("slot filler: %v", err)
		}
	}
}

func (h *held) counts() (statements, rows int) {
	h.s.creates.mu.Lock()
	defer h.s.creates.mu.Unlock()
	return h.s.creates.statements, h.s.creates.rows
}

func newLink(code, url string) *links.Link {
	return &links.Link{Code: code, URL: url, Redirect: links.RedirectFound, CreatedAt: time.Now()}
}

// Creates queued behind busy slots go out as one INSERT, and each caller
// gets its own row's id and stored values.
func TestQueuedCreatesShareOneInsert(t *testing.T) {
	h := holdCreates(t, openTest(t, testenv.PostgresURL(t)))
	const n = 40
	ls := make([]*links.Link, n)
	outs := make([]<-chan error, n)
	for i := range n {
		ls[i] = newLink(fmt.Sprintf("grp%04d", i), fmt.Sprintf("https://example.com/%d", i))
		if i%3 == 0 {
			ls[i].ExpiresAt = time.Now().Add(time.Hour)
		}
		outs[i] = h.queue(t.Context(), ls[i])
	}
	h.waitQueued(t, n)
	h.release(t)
	ids := map[int64]bool{}
	for i := range n {
		if err := <-outs[i]; err != nil {
			t.Fatalf("create %s: %v", ls[i].Code, err)
		}
		if ls[i].ID == 0 || ids[ls[i].ID] {
			t.Fatalf("create %s: id %d is zero or repeated", ls[i].Code, ls[i].ID)
		}
		ids[ls[i].ID] = true
		got, err := h.s.GetLink(t.Context(), ls[i].Code)
		if err != nil {
			t.Fatal(err)
		}
		if *got != *ls[i] {
			t.Fatalf("stored %+v, caller holds %+v", *got, *ls[i])
		}
	}
	statements, rows := h.counts()
	if want := h.s.creates.slots + 1; statements != want || rows != n+h.s.creates.slots {
		t.Fatalf("%d statements for %d rows, want %d for %d", statements, rows, want, n+h.s.creates.slots)
	}
}

// In a batch, a code already stored and a code sent twice are refused as
// they would be one after the other, and only those.
func TestQueuedCreatesConflict(t *testing.T) {
	s := openTest(t, testenv.PostgresURL(t))
	taken := newLink("taken01", "https://example.com/first")
	if err := s.CreateLink(t.Context(), taken); err != nil {
		t.Fatal(err)
	}
	h := holdCreates(t, s)

	fresh := make([]*links.Link, 5)
	var outs []<-chan error
	for i := range fresh {
		fresh[i] = newLink(fmt.Sprintf("fresh%02d", i), "https://example.com/fresh")
		outs = append(outs, h.queue(t.Context(), fresh[i]))
	}
	again := h.queue(t.Context(), newLink("taken01", "https://example.com/second"))
	dupA, dupB := newLink("dup0001", "https://example.com/a"), newLink("dup0001", "https://example.com/b")
	outA, outB := h.queue(t.Context(), dupA), h.queue(t.Context(), dupB)
	h.waitQueued(t, len(fresh)+3)
	h.release(t)

	for i, out := range outs {
		if err := <-out; err != nil {
			t.Fatalf("create %s: %v", fresh[i].Code, err)
		}
	}
	if err := <-again; links.ErrorCode(err) != links.ECONFLICT {
		t.Fatalf("stored code again: %v, want ECONFLICT", err)
	}
	if got, err := h.s.GetLink(t.Context(), "taken01"); err != nil || got.URL != taken.URL {
		t.Fatalf("taken01 = %+v, %v; want the first URL kept", got, err)
	}
	errA, errB := <-outA, <-outB
	winner := dupA
	switch {
	case errA == nil && links.ErrorCode(errB) == links.ECONFLICT:
	case errB == nil && links.ErrorCode(errA) == links.ECONFLICT:
		winner = dupB
	default:
		t.Fatalf("one code twice in a batch: %v and %v, want one nil and one ECONFLICT", errA, errB)
	}
	if got, err := h.s.GetLink(t.Context(), "dup0001"); err != nil || *got != *winner {
		t.Fatalf("dup0001 = %+v, %v; want the winner's row %+v", got, err, winner)
	}
}

// A row PostgreSQL rejects fails alone: the batch is retried row by row.
func TestQueuedCreateRejectedRowFailsAlone(t *testing.T) {
	h := holdCreates(t, openTest(t, testenv.PostgresURL(t)))
	bad := h.queue(t.Context(), newLink("bad0001", "https://example.com/\x00")) // text cannot hold NUL
	good := make([]*links.Link, 4)
	var outs []<-chan error
	for i := range good {
		good[i] = newLink(fmt.Sprintf("good%03d", i), "https://example.com/good")
		outs = append(outs, h.queue(t.Context(), good[i]))
	}
	h.waitQueued(t, len(good)+1)
	h.release(t)
	if err := <-bad; err == nil || links.ErrorCode(err) == links.ECONFLICT {
		t.Fatalf("NUL in the URL: %v, want PostgreSQL's error", err)
	}
	if _, err := h.s.GetLink(t.Context(), "bad0001"); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("bad0001 read: %v, want ENOTFOUND", err)
	}
	for i, out := range outs {
		if err := <-out; err != nil {
			t.Fatalf("create %s next to a bad row: %v", good[i].Code, err)
		}
		if got, err := h.s.GetLink(t.Context(), good[i].Code); err != nil || got.ID != good[i].ID {
			t.Fatalf("%s = %+v, %v", good[i].Code, got, err)
		}
	}
}

// A caller that gives up while queued gets its context's error, and its row
// is never written; the others in the queue are.
func TestQueuedCreateCancelledIsNotWritten(t *testing.T) {
	h := holdCreates(t, openTest(t, testenv.PostgresURL(t)))
	ctx, cancel := context.WithCancel(t.Context())
	gone := h.queue(ctx, newLink("gone001", "https://example.com/gone"))
	kept := newLink("kept001", "https://example.com/kept")
	stays := h.queue(t.Context(), kept)
	h.waitQueued(t, 2)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while queued: %v, want context.Canceled", err)
	}
	h.waitQueued(t, 1)
	h.release(t)
	if err := <-stays; err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.GetLink(t.Context(), "gone001"); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("gone001 read: %v, want ENOTFOUND (never written)", err)
	}
	if _, err := h.s.GetLink(t.Context(), kept.Code); err != nil {
		t.Fatal(err)
	}
}
