package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/linkgate/linkgate/internal/links"
)

// Creates are group-committed: a CreateLink that finds a free slot (fewer
// than createQueue.slots statements in flight, half the pool) runs its own single-row INSERT at
// once, so an idle server answers as fast as before; calls arriving while
// every slot is busy queue, and when a slot's statement returns, the queue
// (up to maxCreateBatch links) goes out as one multi-row INSERT, one
// transaction and one WAL flush for all of them. Each row still commits
// with synchronous_commit=on before its caller hears nil, so a 201 still
// means durable; what the batch saves is the per-statement and per-commit
// work in PostgreSQL and the round trips in linkgate, which bound creates on
// a small machine (make bench, 2 cores: 1,556–3,513 creates/s before,
// 5,565–7,136 after).
//
// Hand-written rather than a library: what a batch must do on a conflict (the
// unique index on code answers each row separately, through ON CONFLICT DO
// NOTHING) and on a rejected statement (each row again on its own, so one
// bad row cannot fail its neighbours) is specific to this table.
const maxCreateBatch = 500

// createQueue holds the CreateLink calls waiting for a slot.
type createQueue struct {
	mu      sync.Mutex
	slots   int // statements allowed in flight (set by Open)
	running int // statements in flight
	waiting []*createReq

	// Counted for tests: INSERT statements run and rows they were sent
	// (retried rows twice).
	statements, rows int
}

// count notes a statement sent outside the slots (a batch's row-by-row
// retry).
func (q *createQueue) count(rows int) {
	q.mu.Lock()
	q.statements++
	q.rows += rows
	q.mu.Unlock()
}

// dequeue takes r out of the queue; false when a batch has taken it.
func (q *createQueue) dequeue(r *createReq) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.waiting, r)
	if i < 0 {
		return false
	}
	q.waiting = slices.Delete(q.waiting, i, i+1)
	return true
}

// createReq is one CreateLink call: the row as stored, and its outcome.
type createReq struct {
	code, url                 string
	redirect                  int
	clicks                    int64
	created, expires, updated time.Time
	ctx                       context.Context // the caller's; a batch runs until the last of its callers' deadlines

	id   int64
	err  error
	done chan struct{} // closed when id or err is set
}

// CreateLink inserts l and sets l.ID. It converts l's times (CreatedAt,
// ExpiresAt, UpdatedAt: normally zero) to UTC truncated to the microsecond,
// the values stored, so l equals what a later GetLink returns. An existing
// code gives an ECONFLICT error (the unique index decides) and leaves l
// unchanged; a Redirect outside the column's range (int32) an EINVALID one.
// Concurrent calls may share one INSERT and one commit (see
// maxCreateBatch); nil still means the row is committed. A call whose ctx
// ends while it is queued returns ctx's error and its row is not written;
// once it is taken from the queue into a batch, as with any write that times
// out, whether it was applied is unknown.
func (s *Store) CreateLink(ctx context.Context, l *links.Link) error {
	if l == nil {
		return fmt.Errorf("create link: %w", links.Errorf(links.EINVALID, "no link given"))
	}
	if l.Redirect < math.MinInt32 || l.Redirect > math.MaxInt32 {
		return fmt.Errorf("create link: %w", links.Errorf(links.EINVALID, "redirect %d is out of range", l.Redirect))
	}
	r := &createReq{code: l.Code, url: l.URL, redirect: l.Redirect, clicks: l.Clicks,
		created: normTime(l.CreatedAt), expires: normTime(l.ExpiresAt), updated: normTime(l.UpdatedAt),
		ctx: ctx, done: make(chan struct{})}
	q := &s.creates
	q.mu.Lock()
	if q.running < q.slots {
		q.running++
		q.statements++
		q.rows++
		q.mu.Unlock()
		r.id, r.err = s.insertOne(ctx, r)
		close(r.done)
		s.nextBatch()
	} else {
		q.waiting = append(q.waiting, r)
		q.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			if q.dequeue(r) {
				return fmt.Errorf("create link: %w", ctx.Err())
			}
			select {
			case <-r.done: // taken into a batch that has answered already
			default:
				return fmt.Errorf("create link: %w", ctx.Err())
			}
		}
	}
	if r.err != nil {
		return r.err
	}
	l.ID, l.CreatedAt, l.ExpiresAt, l.UpdatedAt = r.id, r.created, r.expires, r.updated
	return nil
}

// nextBatch hands the slot just freed to the queue: it starts the next batch
// from a goroutine (so the caller that freed the slot returns at once), or
// frees the slot when nothing waits.
func (s *Store) nextBatch() {
	q := &s.creates
	q.mu.Lock()
	if len(q.waiting) == 0 {
		q.running--
		q.mu.Unlock()
		return
	}
	n := min(len(q.waiting), maxCreateBatch)
	batch := slices.Clone(q.waiting[:n])
	q.waiting = slices.Delete(q.waiting, 0, n)
	q.statements++
	q.rows += len(batch)
	q.mu.Unlock()
	go func() {
		s.insertBatch(batch)
		s.nextBatch()
	}()
}

const insertOneSQL = `INSERT INTO links (code, url, redirect, created_at, expires_at, clicks, updated_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`

// insertOne inserts r on its own.
func (s *Store) insertOne(ctx context.Context, r *createReq) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, insertOneSQL,
		r.code, r.url, r.redirect, r.created, nullTime(r.expires), r.clicks, nullTime(r.updated)).Scan(&id)
	if isUniqueViolation(err) {
		return 0, errTaken(r.code)
	} else if err != nil {
		return 0, fmt.Errorf("create link: %w", err)
	}
	return id, nil
}

// errTaken is CreateLink's answer for a code the unique index refused.
func errTaken(code string) error {
	return fmt.Errorf("create link: %w", links.Errorf(links.ECONFLICT, "the code %q is already taken", code))
}

// insertBatchSQL inserts the rows in code order: ON CONFLICT waits for
// another transaction's uncommitted insert of the same code, so two batches
// (of this instance or another) taking shared codes in different orders could
// wait on each other until PostgreSQL's deadlock check; in one order they
// only queue.
const insertBatchSQL = `INSERT INTO links (code, url, redirect, created_at, expires_at, clicks, updated_at)
	SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::timestamptz[], $5::timestamptz[],
		$6::bigint[], $7::timestamptz[]) AS t(code, url, redirect, created_at, expires_at, clicks, updated_at)
	ORDER BY t.code COLLATE "C"
	ON CONFLICT (code) DO NOTHING
	RETURNING id, code`

// insertBatch inserts the queued rows in one statement and answers each
// caller. A code that appears twice goes in once, with the first caller's
// row; the others get ECONFLICT as they would one after the other. Rows the
// unique index refuses (DO NOTHING) get ECONFLICT. When PostgreSQL rejects
// the statement for its rows' data or breaks a deadlock (rowRejected: the
// statement was rolled back, nothing was written), each row whose caller
// still waits is inserted again on its own, so only the bad ones fail; any
// other error (connection, server shutting down, deadline: whether it
// committed is unknown) is every caller's.
func (s *Store) insertBatch(batch []*createReq) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	first := make(map[string]*createReq, len(batch))
	var rows, dups []*createReq
	for _, r := range batch {
		if _, ok := first[r.code]; ok {
			dups = append(dups, r)
			continue
		}
		first[r.code] = r
		rows = append(rows, r)
	}
	err := s.insertRows(ctx, rows, first)
	switch {
	case rowRejected(err):
		for _, r := range batch {
			if r.ctx.Err() != nil {
				r.err = fmt.Errorf("create link: %w", r.ctx.Err())
			} else {
				s.creates.count(1)
				r.id, r.err = s.insertOne(ctx, r)
			}
			close(r.done)
		}
		return
	case err != nil:
		for _, r := range batch {
			r.err = fmt.Errorf("create link: %w", err)
			close(r.done)
		}
		return
	}
	for _, r := range rows {
		if r.id == 0 {
			r.err = errTaken(r.code)
		}
		close(r.done)
	}
	for _, r := range dups {
		r.err = errTaken(r.code)
		close(r.done)
	}
}

// insertRows runs insertBatchSQL for rows (distinct codes, each byCode's
// entry for its code) and sets the id of each row written.
func (s *Store) insertRows(ctx context.Context, rows []*createReq, byCode map[string]*createReq) error {
	n := len(rows)
	codes, urls := make([]string, n), make([]string, n)
	redirects, clicks := make([]int32, n), make([]int64, n)
	created, expires, updated := make([]time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
	for i, r := range rows {
		codes[i], urls[i], redirects[i], clicks[i] = r.code, r.url, int32(r.redirect), r.clicks
		created[i], expires[i], updated[i] = r.created, nullTime(r.expires), nullTime(r.updated)
	}
	res, err := s.pool.Query(ctx, insertBatchSQL, codes, urls, redirects, created, expires, clicks, updated)
	if err != nil {
		return err
	}
	defer res.Close()
	for res.Next() {
		var id int64
		var code string
		if err := res.Scan(&id, &code); err != nil {
			return err
		}
		if r := byCode[code]; r != nil {
			r.id = id
		}
	}
	return res.Err()
}

// rowRejected reports whether err is PostgreSQL refusing a statement for
// what its rows hold (data exceptions, integrity violations other than the
// unique index's, which ON CONFLICT absorbs, program limits such as an index
// row too large) or ending it to break a deadlock or a serialization
// failure: errors one row can cause and that roll back the statement.
// Connection, authentication and shutdown errors, which every row would
// meet again, are not.
func rowRejected(err error) bool {
	var e *pgconn.PgError
	if !errors.As(err, &e) || len(e.Code) != 5 {
		return false
	}
	switch e.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return e.Code == "40P01" || e.Code == "40001"
}

// batchWithoutDeadline bounds a batch one of whose callers set no deadline
// (the server's calls always have one, from store.Bound).
const batchWithoutDeadline = time.Minute

// batchContext bounds a batch by the latest deadline among its callers (or
// batchWithoutDeadline when one has none), so no caller's statement is cut
// shorter than its own call would have been; no single caller cancels it,
// and it carries none of their values.
func batchContext(batch []*createReq) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, r := range batch {
		d, ok := r.ctx.Deadline()
		if !ok {
			return context.WithTimeout(context.Background(), batchWithoutDeadline)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
