package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store"
	"github.com/linkgate/linkgate/internal/testenv"
)

// TestBoundStuckDatabase holds an ACCESS EXCLUSIVE lock on the links table
// of a real PostgreSQL from another connection, so that every links
// statement waits: the bounded store answers EUNAVAILABLE after its bound,
// a write it timed out changed nothing, a caller's own cancellation is not
// reported as the database's fault, and once the lock goes, calls work.
func TestBoundStuckDatabase(t *testing.T) {
	url := testenv.PostgresURL(t)
	raw, err := store.Open(t.Context(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	const bound = 300 * time.Millisecond
	s := store.Bound(raw, bound)
	if err := s.CreateLink(t.Context(), &links.Link{Code: "before", URL: "https://example.com/", Redirect: links.RedirectFound}); err != nil {
		t.Fatal(err)
	}

	unlock := testenv.LockTable(t, url, "links")

	timed := func(what string, call func() error) {
		t.Helper()
		start := time.Now()
		err := call()
		took := time.Since(start)
		if links.ErrorCode(err) != links.EUNAVAILABLE {
			t.Fatalf("%s on a locked table: %v, want an EUNAVAILABLE error", what, err)
		}
		if took < bound || took > bound+5*time.Second {
			t.Fatalf("%s answered after %v, want just over the %v bound", what, took, bound)
		}
	}
	timed("GetLink", func() error { _, err := s.GetLink(t.Context(), "before"); return err })
	timed("CreateLink", func() error {
		return s.CreateLink(t.Context(), &links.Link{Code: "during", URL: "https://example.com/", Redirect: links.RedirectFound})
	})
	timed("DeleteLink", func() error { return s.DeleteLink(t.Context(), "before", 0) })

	// The caller's own deadline, shorter than the bound, is the caller's
	// error, not the database's.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	_, err = s.GetLink(ctx, "before")
	cancel()
	if err == nil || links.ErrorCode(err) == links.EUNAVAILABLE || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetLink past the caller's deadline: %v, want the caller's context error", err)
	}

	unlock()
	if _, err := s.GetLink(t.Context(), "before"); err != nil {
		t.Fatalf("GetLink after the lock: %v", err)
	}
	if _, err := s.GetLink(t.Context(), "during"); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("the create that timed out: GetLink = %v, want ENOTFOUND (nothing written)", err)
	}
}
