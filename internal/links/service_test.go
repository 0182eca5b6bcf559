package links_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/linkgate/linkgate/internal/cache"
	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store/sqlite"
)

// openSQLite opens a store on a fresh SQLite file, closed when t ends.
func openSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "links.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestDeleteWithPreconditionKeepsARecreatedLink: between the precondition
// check (If-Match against the link read) and the delete, another client
// deletes the link and creates a new one under the same code. The delete
// must not remove the new link; it answers EPRECONDITION.
func TestDeleteWithPreconditionKeepsARecreatedLink(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	svc, err := links.NewService(links.ServiceConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	old, err := svc.Create(ctx, links.CreateRequest{URL: "https://example.com/old", Code: "same-code"})
	if err != nil {
		t.Fatal(err)
	}
	var recreated *links.Link
	err = svc.Delete(ctx, "same-code", func(l *links.Link) error {
		if l.ID != old.ID {
			t.Errorf("precondition saw link %d, want %d", l.ID, old.ID)
		}
		// The other client, after our check and before our delete.
		if err := svc.Delete(ctx, "same-code", nil); err != nil {
			return err
		}
		recreated, err = svc.Create(ctx, links.CreateRequest{URL: "https://example.com/new", Code: "same-code"})
		return err
	})
	if links.ErrorCode(err) != links.EPRECONDITION {
		t.Fatalf("Delete after a concurrent re-create: %v, want an EPRECONDITION error", err)
	}
	got, err := svc.Get(ctx, "same-code")
	if err != nil {
		t.Fatalf("the re-created link is gone: %v", err)
	}
	if got.ID != recreated.ID || got.URL != "https://example.com/new" {
		t.Fatalf("code now names %d %s, want the re-created %d", got.ID, got.URL, recreated.ID)
	}

	// Without interference, the conditional delete deletes.
	if err := svc.Delete(ctx, "same-code", func(*links.Link) error { return nil }); err != nil {
		t.Fatalf("conditional Delete: %v", err)
	}
	if _, err := svc.Get(ctx, "same-code"); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("Get after Delete: %v, want ENOTFOUND", err)
	}
}

// TestDeleteAnswerLostStillInvalidates: a delete whose commit happened but
// whose answer was lost (a timeout after the commit) is retried by the
// client and gets 404; the cached link must not keep redirecting.
func TestDeleteAnswerLostStillInvalidates(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	c, err := cache.New(cache.Config{Source: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	svc, err := links.NewService(links.ServiceConfig{Store: st, Resolver: c, Invalidator: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(ctx, links.CreateRequest{URL: "https://example.com/cached", Code: "cached-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Resolve(ctx, "cached-a"); err != nil {
		t.Fatal(err)
	}
	// The first DELETE's commit, whose answer never reached the service.
	if err := st.DeleteLink(ctx, "cached-a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Resolve(ctx, "cached-a"); err != nil {
		t.Fatalf("the cache should still hold the link before the retried DELETE: %v", err)
	}
	if err := svc.Delete(ctx, "cached-a", nil); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("retried Delete: %v, want ENOTFOUND", err)
	}
	if _, err := svc.Resolve(ctx, "cached-a"); links.ErrorCode(err) != links.ENOTFOUND {
		t.Fatalf("Resolve after the retried Delete: %v, want ENOTFOUND (the cache forgot the link)", err)
	}
}
