package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	return holdCreatesOf(t, s)[0]
}

// holdCreatesOf holds the creates of several Stores on one database under
// one lock (a second SHARE lock would queue behind the first Store's waiting
// inserts); unlocking any of them releases them all.
func holdCreatesOf(t *testing.T, ss ...*Store) []*held {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), ss[0].pool.Config().ConnString())
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
	var hs []*held
	for j, s := range ss {
		h := &held{s: s, lock: tx, errs: make(chan error, s.creates.slots)}
		for i := range s.creates.slots {
			h.fillers.Go(func() {
				h.errs <- s.CreateLink(context.Background(),
					newLink(fmt.Sprintf("slot%d-%d", j, i), "https://example.com/slot"))
			})
		}
		testenv.WaitFor(t, 10*time.Second, "every create slot to be taken", func() bool {
			q := &s.creates
			q.mu.Lock()
			defer q.mu.Unlock()
			return q.running == q.slots
		})
		hs = append(hs, h)
	}
	return hs
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
	h.unlock(t)
	h.wait(t)
}

func (h *held) unlock(t *testing.T) {
	t.Helper()
	if err := h.lock.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func (h *held) wait(t *testing.T) {
	t.Helper()
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

// oneWins checks that of two creates of one code (la answered errA, lb
// errB) exactly one succeeded, the other got ECONFLICT, and s holds the
// winner's row.
func oneWins(t *testing.T, s *Store, la *links.Link, errA error, lb *links.Link, errB error) {
	t.Helper()
	winner := la
	switch {
	case errA == nil && links.ErrorCode(errB) == links.ECONFLICT:
	case errB == nil && links.ErrorCode(errA) == links.ECONFLICT:
		winner = lb
	default:
		t.Fatalf("%s twice: %v and %v, want one nil and one ECONFLICT", la.Code, errA, errB)
	}
	if got, err := s.GetLink(t.Context(), winner.Code); err != nil || *got != *winner {
		t.Fatalf("%s = %+v, %v; want the winner's row %+v", winner.Code, got, err, winner)
	}
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
	oneWins(t, h.s, dupA, <-outA, dupB, <-outB)
	// The refusals came from the batch itself, not from a row-by-row retry.
	if statements, _ := h.counts(); statements != 1+h.s.creates.slots+1 {
		t.Fatalf("%d statements, want %d (taken01, the slot fillers, one batch)", statements, 1+h.s.creates.slots+1)
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

// A redirect the integer column cannot hold is refused, never stored wrapped.
func TestCreateRedirectOutOfRange(t *testing.T) {
	s := openTest(t, testenv.PostgresURL(t))
	l := newLink("wrap001", "https://example.com/")
	l.Redirect = math.MaxInt32 + 303
	if err := s.CreateLink(t.Context(), l); links.ErrorCode(err) != links.EINVALID {
		t.Fatalf("redirect %d: %v, want EINVALID", l.Redirect, err)
	}
}

// Only errors one row can cause send a batch back row by row.
func TestRowRejected(t *testing.T) {
	for code, want := range map[string]bool{
		"22021": true, "22001": true, "23502": true, "54000": true, "40P01": true, "40001": true,
		"08006": false, "53300": false, "57P01": false, "57P03": false, "28P01": false, "25006": false, "": false,
	} {
		if got := rowRejected(fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})); got != want {
			t.Errorf("rowRejected(%q) = %v, want %v", code, got, want)
		}
	}
	if rowRejected(context.DeadlineExceeded) || rowRejected(nil) {
		t.Error("a non-PostgreSQL error sends the batch back row by row")
	}
}

// A batch runs until its last caller's deadline, whichever caller sent it.
func TestBatchContext(t *testing.T) {
	base := time.Now()
	req := func(d time.Duration) *createReq {
		ctx, cancel := context.WithDeadline(context.Background(), base.Add(d))
		t.Cleanup(cancel)
		return &createReq{ctx: ctx}
	}
	ctx, cancel := batchContext([]*createReq{req(time.Second), req(3 * time.Second), req(2 * time.Second)})
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(base.Add(3*time.Second)) {
		t.Fatalf("deadline %v, %v; want the latest, %v", d, ok, base.Add(3*time.Second))
	}
	gone, stop := context.WithCancel(context.Background())
	stop()
	ctx2, cancel2 := batchContext([]*createReq{{ctx: gone}, req(time.Second)})
	defer cancel2()
	if d, ok := ctx2.Deadline(); !ok || time.Until(d) < batchWithoutDeadline-time.Second {
		t.Fatalf("deadline %v, %v; want about %v from now for a caller without one", d, ok, batchWithoutDeadline)
	}
	if ctx2.Err() != nil {
		t.Fatal("a cancelled caller cancelled the whole batch")
	}
}

// Two instances whose batches hold the same codes, queued in opposite orders,
// give each code to exactly one caller, and neither batch is sent back row by
// row (as it would be if they deadlocked: PostgreSQL ends one after a second).
func TestQueuedCreatesOfTwoInstancesOverlap(t *testing.T) {
	url := testenv.PostgresURL(t)
	hs := holdCreatesOf(t, openTest(t, url), openTest(t, url))
	a, b := hs[0], hs[1]
	const n = 30
	type call struct {
		l   *links.Link
		out <-chan error
	}
	ca, cb := make([]call, n), make([]call, n)
	for i := range n { // one at a time, so the queues' orders are known
		l := newLink(fmt.Sprintf("ovl%03d", i), "https://a.example/")
		ca[i] = call{l, a.queue(t.Context(), l)}
		a.waitQueued(t, i+1)
	}
	for i := n - 1; i >= 0; i-- {
		l := newLink(fmt.Sprintf("ovl%03d", i), "https://b.example/")
		cb[i] = call{l, b.queue(t.Context(), l)}
		b.waitQueued(t, n-i)
	}
	a.unlock(t) // b's too
	a.wait(t)
	b.wait(t)
	for i := range n {
		oneWins(t, a.s, ca[i].l, <-ca[i].out, cb[i].l, <-cb[i].out)
	}
	for name, h := range map[string]*held{"a": a, "b": b} {
		if statements, _ := h.counts(); statements != h.s.creates.slots+1 {
			t.Errorf("instance %s: %d statements, want %d (slot fillers, one batch, no row-by-row retry)",
				name, statements, h.s.creates.slots+1)
		}
	}
}
