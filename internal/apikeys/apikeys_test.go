package apikeys

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+t.TempDir()+"/keys.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestCreateAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	token, err := Create(ctx, st, "ops", true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "lg_") || len(token) != len("lg_")+idLen+1+secretLen {
		t.Fatalf("token %q has the wrong shape", token)
	}
	a := NewAuthenticator(st)
	k, err := a.Authenticate(ctx, token)
	if err != nil || !k.Admin || k.Name != "ops" {
		t.Fatalf("Authenticate(valid) = %+v, %v", k, err)
	}
	stored, _ := st.GetAPIKey(ctx, k.ID)
	if bytes.Contains(stored.Hash, []byte(token[len(token)-secretLen:])) || len(stored.Hash) != 32 {
		t.Fatal("stored hash is not a SHA-256 of the token")
	}
	// One wrong character of the secret, a wrong id, garbage: all 401.
	last := byte('a')
	if token[len(token)-1] == 'a' {
		last = 'b'
	}
	wrong := token[:len(token)-1] + string(last)
	for _, bad := range []string{wrong, "lg_" + strings.Repeat("x", idLen) + token[3+idLen:], "garbage", ""} {
		if _, err := a.Authenticate(ctx, bad); links.ErrorCode(err) != links.EUNAUTHORIZED {
			t.Errorf("Authenticate(%q) err = %v, want EUNAUTHORIZED", bad, err)
		}
	}
}

func TestBootstrapKeyRotates(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a := NewAuthenticator(st)
	if err := Bootstrap(ctx, st, "first-admin-key-123456"); err != nil {
		t.Fatal(err)
	}
	if k, err := a.Authenticate(ctx, "first-admin-key-123456"); err != nil || !k.Admin {
		t.Fatalf("bootstrap key refused: %v", err)
	}
	if err := Bootstrap(ctx, st, "second-admin-key-123456"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "first-admin-key-123456"); links.ErrorCode(err) != links.EUNAUTHORIZED {
		t.Fatalf("rotated-out bootstrap key still accepted: %v", err)
	}
	if _, err := a.Authenticate(ctx, "second-admin-key-123456"); err != nil {
		t.Fatalf("new bootstrap key refused: %v", err)
	}
}

func TestGenerateIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		tok, k, err := Generate(rand.Reader, "n", false, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok] || seen[k.ID] {
			t.Fatal("duplicate token or id")
		}
		seen[tok], seen[k.ID] = true, true
	}
}
