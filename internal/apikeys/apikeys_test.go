package apikeys

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store"
	"github.com/linkgate/linkgate/internal/testenv"
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
	a, err := NewAuthenticator(st, Config{})
	if err != nil {
		t.Fatal(err)
	}
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

// TestBootstrapKeyRotates: a replaced bootstrap key is refused at once
// without the row cache; with it, the row read before the rotation answers
// until its TTL has passed (old key still accepted, new one not yet), and
// then the rotation is honoured.
func TestBootstrapKeyRotates(t *testing.T) {
	for _, ttl := range []time.Duration{-1, time.Hour, 100 * time.Millisecond} {
		t.Run(fmt.Sprintf("ttl=%v", ttl), func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t)
			a, err := NewAuthenticator(st, Config{TTL: ttl})
			if err != nil {
				t.Fatal(err)
			}
			if err := Bootstrap(ctx, st, "first-admin-key-123456"); err != nil {
				t.Fatal(err)
			}
			if k, err := a.Authenticate(ctx, "first-admin-key-123456"); err != nil || !k.Admin {
				t.Fatalf("bootstrap key refused: %v", err)
			}
			if err := Bootstrap(ctx, st, "second-admin-key-123456"); err != nil {
				t.Fatal(err)
			}
			rotated := time.Now()
			_, errOld := a.Authenticate(ctx, "first-admin-key-123456")
			_, errNew := a.Authenticate(ctx, "second-admin-key-123456")
			switch {
			case ttl < 0:
				if links.ErrorCode(errOld) != links.EUNAUTHORIZED || errNew != nil {
					t.Fatalf("without the cache, right after the rotation: old key %v, new key %v; want refused, accepted", errOld, errNew)
				}
				return
			case ttl == time.Hour:
				if errOld != nil || links.ErrorCode(errNew) != links.EUNAUTHORIZED {
					t.Fatalf("within the TTL: old key %v, new key %v; want the cached row's answers (accepted, refused)", errOld, errNew)
				}
				return
			}
			testenv.WaitFor(t, 5*time.Second, "the old key refused and the new one accepted", func() bool {
				_, errOld := a.Authenticate(ctx, "first-admin-key-123456")
				_, errNew := a.Authenticate(ctx, "second-admin-key-123456")
				return links.ErrorCode(errOld) == links.EUNAUTHORIZED && errNew == nil
			})
			if took := time.Since(rotated); took > ttl+time.Second {
				t.Errorf("rotation honoured after %v with a TTL of %v", took, ttl)
			}
		})
	}
}

// countingStore is a real store that counts GetAPIKey calls.
type countingStore struct {
	store.Store
	reads atomic.Int64
	gate  chan struct{} // when non-nil, reads wait for it
}

func (s *countingStore) GetAPIKey(ctx context.Context, id string) (*links.APIKey, error) {
	s.reads.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	return s.Store.GetAPIKey(ctx, id)
}

// TestAuthenticatorReusesRows: within the TTL a valid key, a wrong secret
// for a known id, an unknown id and any token not in the lg_ shape each cost
// one store read, however often presented; concurrent first reads of one
// id share a read; store failures are not remembered.
func TestAuthenticatorReusesRows(t *testing.T) {
	ctx := context.Background()
	st := &countingStore{Store: openStore(t)}
	token, err := Create(ctx, st, "client", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := Bootstrap(ctx, st, "the-admin-key-123456"); err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthenticator(st, Config{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := token[:len(token)-4] + "zzzz"
	unknownID := "lg_" + strings.Repeat("x", idLen) + token[3+idLen:]
	for _, tc := range []struct {
		name, token string
		ok          bool
	}{
		{"valid", token, true}, {"wrong secret", wrongSecret, false}, {"unknown id", unknownID, false},
		{"bootstrap", "the-admin-key-123456", true}, {"not lg_ shaped", "garbage-token", false},
	} {
		before := st.reads.Load()
		for range 50 {
			_, err := a.Authenticate(ctx, tc.token)
			if (err == nil) != tc.ok || (err != nil && links.ErrorCode(err) != links.EUNAUTHORIZED) {
				t.Fatalf("%s: %v, want ok=%v", tc.name, err, tc.ok)
			}
		}
		// The wrong secret shares the valid key's row, garbage the bootstrap row.
		want := int64(1)
		if tc.name == "wrong secret" || tc.name == "not lg_ shaped" {
			want = 0
		}
		if n := st.reads.Load() - before; n != want {
			t.Errorf("%s presented 50 times: %d store reads, want %d", tc.name, n, want)
		}
	}

	// Concurrent first reads of one id share one store call: all 20 are
	// waiting (synctest) while the first read is held, and then 1 read
	// serves them (without sharing, each would be in the store: 20).
	other, err := Create(ctx, st, "other", false)
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		st.gate = make(chan struct{})
		defer func() { st.gate = nil }()
		before := st.reads.Load()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if _, err := a.Authenticate(ctx, other); err != nil {
					t.Errorf("concurrent: %v", err)
				}
			})
		}
		synctest.Wait() // every caller is blocked: one in the store, 19 on its result
		if n := st.reads.Load() - before; n != 1 {
			t.Fatalf("20 concurrent first uses of a key: %d store reads in flight, want 1 shared", n)
		}
		close(st.gate)
		wg.Wait()
		if n := st.reads.Load() - before; n != 1 {
			t.Errorf("20 concurrent first uses of a key: %d store reads, want 1", n)
		}
	})

	// A store failure is returned, not remembered as "no such key".
	closed := &countingStore{Store: openStore(t)}
	b, err := NewAuthenticator(closed, Config{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if _, err := b.Authenticate(ctx, token); err == nil || links.ErrorCode(err) == links.EUNAUTHORIZED {
		t.Fatalf("store closed: %v, want the store's error", err)
	}
	if _, err := b.Authenticate(ctx, token); err == nil || links.ErrorCode(err) == links.EUNAUTHORIZED || closed.reads.Load() != 2 {
		t.Fatalf("store closed, second try: %v after %d reads; want the store asked again", err, closed.reads.Load())
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

// TestAuthenticatorVouched: a token is vouched for while its id's row (or
// absence) is fresh, while a read of its id is in flight, and, once stale,
// only if it is the key its id held when last read (not another secret for
// that id), however many made-up ids were read since; never without the
// cache.
func TestAuthenticatorVouched(t *testing.T) {
	ctx := context.Background()
	st := &countingStore{Store: openStore(t)}
	token, err := Create(ctx, st, "client", false)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Create(ctx, st, "other", false)
	if err != nil {
		t.Fatal(err)
	}
	unknownID := "lg_" + strings.Repeat("x", idLen) + token[3+idLen:]
	synctest.Test(t, func(t *testing.T) {
		a, err := NewAuthenticator(st, Config{TTL: time.Minute, Size: 4})
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{token, unknownID, "garbage-token"} {
			if a.Vouched(tok) {
				t.Fatalf("Vouched(%q) before any read", tok)
			}
			_, _ = a.Authenticate(ctx, tok)
			if !a.Vouched(tok) {
				t.Fatalf("Vouched(%q) false right after its read", tok)
			}
		}
		// Another secret for a read id, another non-lg_ token: same rows.
		if !a.Vouched(token[:len(token)-4]+"zzzz") || !a.Vouched("other-garbage") {
			t.Fatal("a token sharing a read row is not vouched for")
		}
		// Made-up ids read since fill the 4-row cache many times over.
		for i := range 20 {
			_, _ = a.Authenticate(ctx, fmt.Sprintf("lg_%0*d_%s", idLen, i, token[4+idLen:]))
		}
		time.Sleep(time.Minute) // the bubble's clock
		if !a.Vouched(token) {
			t.Fatal("a real key's stale row: not vouched for (its re-read only re-checks a real key)")
		}
		if a.Vouched(token[:len(token)-4] + "zzzz") {
			t.Fatal("another secret for a real key's id, its row stale: vouched for")
		}
		if a.Vouched(unknownID) || a.Vouched("garbage-token") {
			t.Fatal("stale absences still vouched for")
		}

		// While the first read of an id is in the store, other callers of
		// that id share it: vouched for.
		st.gate = make(chan struct{})
		defer func() { st.gate = nil }()
		done := make(chan struct{})
		go func() { defer close(done); _, _ = a.Authenticate(ctx, other) }()
		synctest.Wait() // the read is held in the store
		if !a.Vouched(other) {
			t.Fatal("an id whose read is in flight is not vouched for")
		}
		close(st.gate)
		<-done
	})
	a, err := NewAuthenticator(st, Config{TTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = a.Authenticate(ctx, token)
	if a.Vouched(token) {
		t.Fatal("vouched for without a cache")
	}
}
