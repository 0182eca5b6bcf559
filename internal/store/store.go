// Package store defines the durable storage contract for links and API keys
// and opens the implementation a database URL names: sqlite://PATH (the
// embedded default, package sqlite) or postgres://... (package postgres).
//
// Every implementation passes the conformance suite in package storetest,
// unchanged. Implementations are safe for concurrent use. Errors carry the
// codes of package links (ENOTFOUND, ECONFLICT); anything else is internal.
package store

import (
	"context"

	"github.com/linkgate/linkgate/internal/links"
)

// Store is the durable source of truth. A method that returns nil has made its
// write durable (SQLite synchronous=FULL, PostgreSQL synchronous_commit=on).
type Store interface {
	// CreateLink inserts l and sets l.ID. It returns an ECONFLICT error when
	// the code exists (the unique index decides, so concurrent creates of one
	// code give exactly one success). Times are stored in UTC at microsecond
	// precision, and l's times are set to the stored values.
	// Nil l is an EINVALID error.
	CreateLink(ctx context.Context, l *links.Link) error
	// GetLink returns the link with the code, or an ENOTFOUND error.
	GetLink(ctx context.Context, code string) (*links.Link, error)
	// DeleteLink removes the link with the code, or returns an ENOTFOUND
	// error. A non-zero id narrows it to the link with that ID (IDs are never
	// reused): when the code has since been deleted and created again, the
	// new link stays and the answer is ENOTFOUND. One statement.
	DeleteLink(ctx context.Context, code string, id int64) error
	// ListLinks returns up to p.Limit links with ID < p.Cursor.AfterID (all
	// when AfterID is 0), newest (highest ID) first. A Limit below 1 means
	// links.DefaultListLimit; one above links.MaxListLimit is capped.
	ListLinks(ctx context.Context, p links.ListParams) ([]*links.Link, error)
	// AddClicks adds each count to its link's clicks in one transaction and
	// sets the changed links' UpdatedAt to the store's clock (never moving it
	// back). Codes that no longer exist and zero counts are ignored; a
	// negative count is an EINVALID error and nothing is written.
	AddClicks(ctx context.Context, counts map[string]int64) error
	// CreateAPIKey inserts k, or returns an ECONFLICT error when k.ID exists.
	// A nil k or a Hash that is not 32 bytes is an EINVALID error.
	CreateAPIKey(ctx context.Context, k *links.APIKey) error
	// PutAPIKey inserts k or replaces the key with the same ID; k is checked
	// as in CreateAPIKey.
	PutAPIKey(ctx context.Context, k *links.APIKey) error
	// GetAPIKey returns the key with the ID, or an ENOTFOUND error.
	GetAPIKey(ctx context.Context, id string) (*links.APIKey, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the connections. The Store must not be used after.
	Close() error
}
