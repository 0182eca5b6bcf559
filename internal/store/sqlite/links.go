package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store/internal/check"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const linkColumns = "id, code, url, redirect, created_at, expires_at, clicks, updated_at"

// CreateLink inserts l and sets l.ID. It converts l's times (CreatedAt,
// ExpiresAt, UpdatedAt: normally zero) to UTC truncated to the microsecond,
// the values stored, so l equals what a later GetLink returns. An existing
// code gives an ECONFLICT error (the unique index decides) and leaves l
// unchanged.
func (s *Store) CreateLink(ctx context.Context, l *links.Link) error {
	if l == nil {
		return fmt.Errorf("create link: %w", links.Errorf(links.EINVALID, "no link given"))
	}
	created, expires, updated := normTime(l.CreatedAt), normTime(l.ExpiresAt), normTime(l.UpdatedAt)
	// Exec, not INSERT ... RETURNING: Exec steps the statement to its end, so
	// an error while committing (the WAL fsync) is returned here. The single
	// write connection makes LastInsertId this insert's id.
	res, err := s.w.ExecContext(ctx,
		"INSERT INTO links (code, url, redirect, created_at, expires_at, clicks, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		l.Code, l.URL, l.Redirect, created.UnixMicro(), nullMicros(expires), l.Clicks, nullMicros(updated))
	if isUniqueViolation(err) {
		return fmt.Errorf("create link: %w", links.Errorf(links.ECONFLICT, "the code %q is already taken", l.Code))
	} else if err != nil {
		return fmt.Errorf("create link: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("create link: %w", err)
	}
	l.ID, l.CreatedAt, l.ExpiresAt, l.UpdatedAt = id, created, expires, updated
	return nil
}

// GetLink returns the link with the code, or an ENOTFOUND error.
func (s *Store) GetLink(ctx context.Context, code string) (*links.Link, error) {
	row := s.r.QueryRowContext(ctx, "SELECT "+linkColumns+" FROM links WHERE code = ?", code)
	l, err := scanLink(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get link: %w", links.Errorf(links.ENOTFOUND, "no link with code %q", code))
	} else if err != nil {
		return nil, fmt.Errorf("get link: %w", err)
	}
	return l, nil
}

// DeleteLink removes the link with the code (and the id, when not 0), or
// returns an ENOTFOUND error.
func (s *Store) DeleteLink(ctx context.Context, code string, id int64) error {
	res, err := s.w.ExecContext(ctx, "DELETE FROM links WHERE code = ?1 AND (?2 = 0 OR id = ?2)", code, id)
	if err != nil {
		return fmt.Errorf("delete link: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete link: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("delete link: %w", links.Errorf(links.ENOTFOUND, "no link with code %q", code))
	}
	return nil
}

// ListLinks returns up to p.Limit links with ID < p.Cursor.AfterID (all when
// AfterID is 0), highest ID first. A Limit below 1 means
// links.DefaultListLimit; one above links.MaxListLimit is capped to it.
func (s *Store) ListLinks(ctx context.Context, p links.ListParams) ([]*links.Link, error) {
	limit := check.ListLimit(p.Limit)
	var rows *sql.Rows
	var err error
	if p.Cursor.AfterID == 0 {
		rows, err = s.r.QueryContext(ctx,
			"SELECT "+linkColumns+" FROM links ORDER BY id DESC LIMIT ?", limit)
	} else {
		rows, err = s.r.QueryContext(ctx,
			"SELECT "+linkColumns+" FROM links WHERE id < ? ORDER BY id DESC LIMIT ?", p.Cursor.AfterID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	defer rows.Close()
	out := make([]*links.Link, 0, min(limit, 64))
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return out, nil
}

// AddClicks adds each count to its link's clicks in one transaction and sets
// UpdatedAt of each changed link to Config.Now (never moving it backwards).
// Unknown codes and zero counts are skipped; a negative count is an EINVALID
// error and nothing is written.
//
// The counts go to SQLite as one JSON object per statement, of up to
// addClicksChunk "code": count members that one UPDATE ... FROM json_each
// joins to the links by the code index: a flush under load carries thousands
// of codes, and an UPDATE run per code paid database/sql's and the driver's
// per-statement work (a goroutine each, argument conversion, the step) for
// every one, 5.6-6.8 µs per code at 10,000 codes (BenchmarkAddClicks).
//
// That join is only fast in the order SQLite picks without statistics (the
// JSON outer, one index search per code). After an ANALYZE of a small table
// (nothing in linkgate runs one, an operator may) it puts links outer and
// walks the whole JSON for every link, which would hold the single writer
// for minutes once the table has grown. So each flush asks for the plan
// first (one EXPLAIN, tens of µs) and, when it is not the indexed one,
// falls back to one prepared UPDATE per code.
func (s *Store) AddClicks(ctx context.Context, counts map[string]int64) error {
	codes, err := check.ClickCodes(counts)
	if err != nil || len(codes) == 0 {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add clicks: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	now := normTime(s.now()).UnixMicro()
	joined, err := clickJoinIndexed(ctx, tx)
	if err != nil {
		return fmt.Errorf("add clicks: %w", err)
	}
	if joined {
		var batch []byte
		for chunk := range slices.Chunk(codes, addClicksChunk) {
			batch = appendClickBatch(batch[:0], chunk, counts)
			if _, err := tx.ExecContext(ctx, addClicksSQL, string(batch), now); err != nil {
				return fmt.Errorf("add clicks: %w", err)
			}
		}
	} else {
		stmt, err := tx.PrepareContext(ctx, addClickSQL)
		if err != nil {
			return fmt.Errorf("add clicks: %w", err)
		}
		defer stmt.Close()
		for _, code := range codes {
			if _, err := stmt.ExecContext(ctx, counts[code], now, code); err != nil {
				return fmt.Errorf("add clicks: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("add clicks: %w", err)
	}
	return nil
}

// addClicksSQL adds the counts of the JSON object ?1 ({"code": count, ...};
// json_each gives each member's key and value without parsing it again),
// stamping ?2. See AddClicks for its plan.
const addClicksSQL = `UPDATE links SET clicks = clicks + c.n, updated_at = max(coalesce(updated_at, ?2), ?2)
	FROM (SELECT key AS code, value AS n FROM json_each(?1)) AS c
	WHERE links.code = c.code`

// addClickSQL is the fallback: count ?1 for the code ?3, stamping ?2.
const addClickSQL = "UPDATE links SET clicks = clicks + ?1, updated_at = max(coalesce(updated_at, ?2), ?2) WHERE code = ?3"

// clickJoinIndexed reports whether SQLite would run addClicksSQL with the
// JSON as the outer loop and an index search of links for each member. The
// plan does not depend on the JSON's content, only on the schema and the
// statistics.
func clickJoinIndexed(ctx context.Context, tx *sql.Tx) (bool, error) {
	rows, err := tx.QueryContext(ctx, "EXPLAIN QUERY PLAN "+addClicksSQL, "{}", 0)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	var steps []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return false, err
		}
		steps = append(steps, detail)
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	// Two steps: scan the JSON, then search links by the code index.
	return len(steps) == 2 && strings.HasPrefix(steps[0], "SCAN json_each") &&
		strings.HasPrefix(steps[1], "SEARCH links USING INDEX"), nil
}

// addClicksChunk bounds one statement's JSON (about 20 bytes a code) so a
// flush of a million codes never builds one huge string.
const addClicksChunk = 4096

// appendClickBatch appends the JSON object {"code": count, ...} of codes
// (distinct, as map keys are).
func appendClickBatch(b []byte, codes []string, counts map[string]int64) []byte {
	b = append(b, '{')
	for i, code := range codes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, code)
		b = append(b, ':')
		b = strconv.AppendInt(b, counts[code], 10)
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. Bytes from 0x80 up pass
// through as they are, so a code that is not valid UTF-8 still matches
// itself (encoding/json, and the access log's encoder in httpserver, replace
// them with U+FFFD: right for a log line, wrong for a key to match).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// CreateAPIKey inserts k, or returns an ECONFLICT error when k.ID exists. The
// hash must be 32 bytes (EINVALID otherwise). k.CreatedAt is normalised as in
// CreateLink.
func (s *Store) CreateAPIKey(ctx context.Context, k *links.APIKey) error {
	if err := check.APIKey(k); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	created := normTime(k.CreatedAt)
	_, err := s.w.ExecContext(ctx,
		"INSERT INTO api_keys (id, name, hash, admin, created_at) VALUES (?, ?, ?, ?, ?)",
		k.ID, k.Name, k.Hash, k.Admin, created.UnixMicro())
	if isUniqueViolation(err) {
		return fmt.Errorf("create api key: %w", links.Errorf(links.ECONFLICT, "an API key with id %q exists", k.ID))
	} else if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	k.CreatedAt = created
	return nil
}

// PutAPIKey inserts k or replaces every field of the key with the same ID.
func (s *Store) PutAPIKey(ctx context.Context, k *links.APIKey) error {
	if err := check.APIKey(k); err != nil {
		return fmt.Errorf("put api key: %w", err)
	}
	created := normTime(k.CreatedAt)
	if _, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (id, name, hash, admin, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, hash = excluded.hash,
			admin = excluded.admin, created_at = excluded.created_at`,
		k.ID, k.Name, k.Hash, k.Admin, created.UnixMicro()); err != nil {
		return fmt.Errorf("put api key: %w", err)
	}
	k.CreatedAt = created
	return nil
}

// GetAPIKey returns the key with the ID, or an ENOTFOUND error.
func (s *Store) GetAPIKey(ctx context.Context, id string) (*links.APIKey, error) {
	var k links.APIKey
	var created int64
	err := s.r.QueryRowContext(ctx, "SELECT id, name, hash, admin, created_at FROM api_keys WHERE id = ?", id).
		Scan(&k.ID, &k.Name, &k.Hash, &k.Admin, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get api key: %w", links.Errorf(links.ENOTFOUND, "no API key with id %q", id))
	} else if err != nil {
		return nil, fmt.Errorf("get api key: %w", err)
	}
	k.CreatedAt = fromMicros(created)
	return &k, nil
}

type scanner interface{ Scan(dest ...any) error }

// scanLink reads one row of linkColumns into a new Link.
func scanLink(row scanner) (*links.Link, error) {
	var l links.Link
	var created int64
	var expires, updated sql.NullInt64
	if err := row.Scan(&l.ID, &l.Code, &l.URL, &l.Redirect, &created, &expires, &l.Clicks, &updated); err != nil {
		return nil, err
	}
	l.CreatedAt = fromMicros(created)
	if expires.Valid {
		l.ExpiresAt = fromMicros(expires.Int64)
	}
	if updated.Valid {
		l.UpdatedAt = fromMicros(updated.Int64)
	}
	return &l, nil
}

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY constraint
// failure.
func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// normTime is t as stored: UTC, truncated to the microsecond; the zero time
// stays zero.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// nullMicros stores the zero time as NULL.
func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}
