// Package storetest is the conformance suite for store.Store: every
// implementation runs Run, unchanged, against a real database, so the SQLite
// and PostgreSQL stores behave the same for every caller.
//
// Run's subtests run in parallel, each on its own fresh database, and use many
// goroutines on one Store; an implementation must be safe for concurrent use.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store"
)

// OpenFunc opens a Store on one database; it fails t when it cannot. The suite
// closes every Store it opens, and calls OpenFunc again after Close to check
// that what was written survived.
type OpenFunc func(t *testing.T) store.Store

// NewDB prepares a fresh, empty database for the test t (removed when t ends)
// and returns the OpenFunc for it. It must not open a Store itself.
type NewDB func(t *testing.T) OpenFunc

// Run runs the conformance suite; newDB is called once per subtest.
func Run(t *testing.T, newDB NewDB) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open OpenFunc)
	}{
		{"CreateGetRoundTrip", testCreateGetRoundTrip},
		{"DuplicateCode", testDuplicateCode},
		{"NotFound", testNotFound},
		{"DeleteThenGet", testDeleteThenGet},
		{"ListPagination", testListPagination},
		{"AddClicks", testAddClicks},
		{"AddClicksBatch", testAddClicksBatch},
		{"AddClicksConcurrent", testAddClicksConcurrent},
		{"APIKeys", testAPIKeys},
		{"FreshCopies", testFreshCopies},
		{"SurvivesReopen", testSurvivesReopen},
		{"ConcurrentSameCode", testConcurrentSameCode},
		{"ConcurrentDistinctCodes", testConcurrentDistinctCodes},
		{"ReadYourWritesConcurrently", testReadYourWrites},
		{"CanceledContext", testCanceledContext},
		{"BadInput", testBadInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newDB(t))
		})
	}
}

// base is a microsecond-aligned instant used as a creation time.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// openStore opens a Store that is closed when t ends.
func openStore(t *testing.T, open OpenFunc) store.Store {
	t.Helper()
	s := open(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newLink(code string) *links.Link {
	return &links.Link{Code: code, URL: "https://example.com/" + code, Redirect: links.RedirectFound, CreatedAt: base}
}

func mustCreate(t *testing.T, s store.Store, l *links.Link) *links.Link {
	t.Helper()
	if err := s.CreateLink(t.Context(), l); err != nil {
		t.Fatalf("CreateLink(%q): %v", l.Code, err)
	}
	return l
}

func mustGet(t *testing.T, s store.Store, code string) *links.Link {
	t.Helper()
	l, err := s.GetLink(t.Context(), code)
	if err != nil {
		t.Fatalf("GetLink(%q): %v", code, err)
	}
	return l
}

// wantCode fails t unless err carries the links error code.
func wantCode(t *testing.T, err error, code, what string) {
	t.Helper()
	if got := links.ErrorCode(err); got != code {
		t.Fatalf("%s: error code %q (err %v), want %q", what, got, err, code)
	}
}

// sameTime reports whether got is want's instant, in UTC.
func sameTime(got, want time.Time) bool {
	if want.IsZero() {
		return got.IsZero()
	}
	return got.Equal(want) && got.Location() == time.UTC
}

// checkLink fails t unless got has every field of want, times in UTC.
func checkLink(t *testing.T, what string, got, want *links.Link) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil link", what)
	}
	if got.ID != want.ID || got.Code != want.Code || got.URL != want.URL || got.Redirect != want.Redirect ||
		got.Clicks != want.Clicks || !sameTime(got.CreatedAt, want.CreatedAt) || !sameTime(got.ExpiresAt, want.ExpiresAt) ||
		!sameTime(got.UpdatedAt, want.UpdatedAt) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, *got, *want)
	}
}

func testCreateGetRoundTrip(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ist := time.FixedZone("IST", 5*3600+1800)
	pst := time.FixedZone("PST", -8*3600)
	in := []*links.Link{
		{ // every field set, times in other zones
			Code: "Round-Trip_1", URL: "https://例え.example/a?b=c&d=%C3%A9#frag", Redirect: links.RedirectMovedPermanently,
			CreatedAt: base.In(ist), ExpiresAt: base.Add(48 * time.Hour).In(pst), Clicks: 42,
		},
		{ // never expires; sub-microsecond creation time
			Code: "rt2", URL: "http://example.org/", Redirect: links.RedirectPermanent,
			CreatedAt: base.Add(123456789 * time.Nanosecond),
		},
		{ // before 1970 and far in the future; an imported row with UpdatedAt
			Code: "rt3", URL: "https://example.net/x", Redirect: links.RedirectTemporary,
			CreatedAt: time.Date(1969, 7, 20, 20, 17, 40, 1500, time.UTC),
			ExpiresAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
			UpdatedAt: base.Add(time.Minute + time.Nanosecond).In(ist), Clicks: 7,
		},
	}
	want := make([]*links.Link, len(in))
	for i, l := range in {
		w := *l
		w.CreatedAt = l.CreatedAt.UTC().Truncate(time.Microsecond)
		if !l.ExpiresAt.IsZero() {
			w.ExpiresAt = l.ExpiresAt.UTC().Truncate(time.Microsecond)
		}
		if !l.UpdatedAt.IsZero() {
			w.UpdatedAt = l.UpdatedAt.UTC().Truncate(time.Microsecond)
		}
		want[i] = &w
	}
	var prevID int64
	for i, l := range in {
		mustCreate(t, s, l)
		if l.ID <= prevID {
			t.Fatalf("CreateLink(%q) set ID %d, want > %d (ids increase)", l.Code, l.ID, prevID)
		}
		prevID = l.ID
		want[i].ID = l.ID
		checkLink(t, "link after CreateLink (times normalised to what is stored)", l, want[i])
	}
	for _, w := range want {
		checkLink(t, "GetLink", mustGet(t, s, w.Code), w)
	}
	page, err := s.ListLinks(t.Context(), links.ListParams{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != len(want) {
		t.Fatalf("ListLinks returned %d links, want %d", len(page), len(want))
	}
	for i, got := range page {
		checkLink(t, "ListLinks", got, want[len(want)-1-i])
	}
}

func testDuplicateCode(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	orig := mustCreate(t, s, newLink("dupcode"))
	again := &links.Link{Code: "dupcode", URL: "https://other.example/", Redirect: links.RedirectTemporary, CreatedAt: base}
	wantCode(t, s.CreateLink(t.Context(), again), links.ECONFLICT, "second CreateLink of one code")
	if again.ID != 0 {
		t.Errorf("failed CreateLink set ID %d", again.ID)
	}
	checkLink(t, "original after conflict", mustGet(t, s, "dupcode"), orig)
	// Codes are case-sensitive, and the store still works after a conflict.
	upper := mustCreate(t, s, newLink("DUPCODE"))
	if upper.ID <= orig.ID {
		t.Errorf("id after conflict %d, want > %d", upper.ID, orig.ID)
	}
	checkLink(t, "other case", mustGet(t, s, "DUPCODE"), upper)
	checkLink(t, "original", mustGet(t, s, "dupcode"), orig)
}

func testNotFound(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	mustCreate(t, s, newLink("exists"))
	_, err := s.GetLink(t.Context(), "missing")
	wantCode(t, err, links.ENOTFOUND, "GetLink of unknown code")
	_, err = s.GetLink(t.Context(), "EXISTS")
	wantCode(t, err, links.ENOTFOUND, "GetLink in other case")
	wantCode(t, s.DeleteLink(t.Context(), "missing", 0), links.ENOTFOUND, "DeleteLink of unknown code")
	_, err = s.GetAPIKey(t.Context(), "missing")
	wantCode(t, err, links.ENOTFOUND, "GetAPIKey of unknown id")
	mustGet(t, s, "exists")
}

func testDeleteThenGet(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	a := mustCreate(t, s, newLink("gone-a"))
	b := mustCreate(t, s, newLink("kept-b"))
	if err := s.DeleteLink(t.Context(), "gone-a", 0); err != nil {
		t.Fatalf("DeleteLink: %v", err)
	}
	_, err := s.GetLink(t.Context(), "gone-a")
	wantCode(t, err, links.ENOTFOUND, "GetLink after DeleteLink")
	wantCode(t, s.DeleteLink(t.Context(), "gone-a", 0), links.ENOTFOUND, "second DeleteLink")
	checkLink(t, "other link", mustGet(t, s, "kept-b"), b)
	// The code is free again; ids are never reused.
	a2 := mustCreate(t, s, newLink("gone-a"))
	if a2.ID <= b.ID || a2.ID == a.ID {
		t.Fatalf("recreated link got id %d (old %d, newest %d): ids must not be reused", a2.ID, a.ID, b.ID)
	}
	page, err := s.ListLinks(t.Context(), links.ListParams{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].ID != a2.ID || page[1].ID != b.ID {
		t.Fatalf("listing after delete and recreate: %v", ids(page))
	}
	// A delete narrowed to the old link's id leaves the new one (what
	// DELETE with If-Match relies on); narrowed to the new id, it deletes.
	wantCode(t, s.DeleteLink(t.Context(), "gone-a", a.ID), links.ENOTFOUND, "DeleteLink of the old id")
	checkLink(t, "recreated link after a delete of the old id", mustGet(t, s, "gone-a"), a2)
	wantCode(t, s.DeleteLink(t.Context(), "kept-b", a2.ID), links.ENOTFOUND, "DeleteLink of another link's id")
	checkLink(t, "other link after a delete with a foreign id", mustGet(t, s, "kept-b"), b)
	if err := s.DeleteLink(t.Context(), "gone-a", a2.ID); err != nil {
		t.Fatalf("DeleteLink of the current id: %v", err)
	}
	_, err = s.GetLink(t.Context(), "gone-a")
	wantCode(t, err, links.ENOTFOUND, "GetLink after DeleteLink of the current id")
}

func ids(ls []*links.Link) []int64 {
	out := make([]int64, len(ls))
	for i, l := range ls {
		out[i] = l.ID
	}
	return out
}

func testListPagination(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := t.Context()
	empty, err := s.ListLinks(ctx, links.ListParams{Limit: 10})
	if err != nil || len(empty) != 0 {
		t.Fatalf("ListLinks on empty store = %v, %v; want none, nil", ids(empty), err)
	}
	const n = 60
	var all []*links.Link // newest first, deleted ones left out
	for i := range n {
		l := mustCreate(t, s, newLink(fmt.Sprintf("page%02d", i)))
		if i%10 == 3 {
			if err := s.DeleteLink(ctx, l.Code, 0); err != nil {
				t.Fatal(err)
			}
			continue
		}
		all = append([]*links.Link{l}, all...)
	}
	for _, limit := range []int{1, 4, 7, len(all), links.MaxListLimit} {
		var got []*links.Link
		seen := map[int64]bool{}
		cursor := links.Cursor{}
		for pages := 0; ; pages++ {
			if pages > len(all)+1 {
				t.Fatalf("limit %d: pagination does not end", limit)
			}
			page, err := s.ListLinks(ctx, links.ListParams{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if len(page) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page))
			}
			for _, l := range page {
				if seen[l.ID] {
					t.Fatalf("limit %d: id %d listed twice", limit, l.ID)
				}
				seen[l.ID] = true
				if cursor.AfterID != 0 && l.ID >= cursor.AfterID {
					t.Fatalf("limit %d: id %d not below cursor %d", limit, l.ID, cursor.AfterID)
				}
			}
			got = append(got, page...)
			if len(page) < limit {
				break
			}
			cursor = links.Cursor{AfterID: page[len(page)-1].ID}
		}
		if len(got) != len(all) {
			t.Fatalf("limit %d: walk listed %d links, want %d: %v", limit, len(got), len(all), ids(got))
		}
		for i := range all {
			checkLink(t, fmt.Sprintf("limit %d, position %d", limit, i), got[i], all[i])
		}
	}
	page, err := s.ListLinks(ctx, links.ListParams{})
	if err != nil || len(page) != links.DefaultListLimit || page[0].ID != all[0].ID {
		t.Fatalf("Limit 0: %d links (first %v), %v; want the newest %d", len(page), ids(page[:min(1, len(page))]), err, links.DefaultListLimit)
	}
	page, err = s.ListLinks(ctx, links.ListParams{Limit: 1 << 30})
	if err != nil || len(page) != len(all) {
		t.Fatalf("huge Limit: %d links, %v; want all %d", len(page), err, len(all))
	}
	page, err = s.ListLinks(ctx, links.ListParams{Limit: 10, Cursor: links.Cursor{AfterID: all[0].ID + 1000}})
	if err != nil || len(page) != 10 || page[0].ID != all[0].ID {
		t.Fatalf("cursor above newest: %v, %v; want the newest 10", ids(page), err)
	}
	oldest := all[len(all)-1]
	page, err = s.ListLinks(ctx, links.ListParams{Limit: 10, Cursor: links.Cursor{AfterID: oldest.ID}})
	if err != nil || len(page) != 0 {
		t.Fatalf("cursor at oldest: %v, %v; want none", ids(page), err)
	}
}

func clicksOf(t *testing.T, s store.Store, code string) int64 {
	t.Helper()
	return mustGet(t, s, code).Clicks
}

func testAddClicks(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := t.Context()
	mustCreate(t, s, newLink("click-a"))
	b := newLink("click-b")
	b.Clicks = 10
	mustCreate(t, s, b)
	if err := s.AddClicks(ctx, map[string]int64{"click-a": 3, "click-b": 5, "no-such-code": 7}); err != nil {
		t.Fatalf("AddClicks: %v", err)
	}
	if a, b := clicksOf(t, s, "click-a"), clicksOf(t, s, "click-b"); a != 3 || b != 15 {
		t.Fatalf("clicks a=%d b=%d, want 3 and 15", a, b)
	}
	untouched := mustCreate(t, s, newLink("click-c"))
	before := time.Now().Add(-time.Second) // generous: the store's clock may be the database's
	if err := s.AddClicks(ctx, map[string]int64{"click-a": 2, "click-b": 0}); err != nil {
		t.Fatalf("AddClicks: %v", err)
	}
	after := time.Now().Add(time.Second)
	stampA, stampB := mustGet(t, s, "click-a").UpdatedAt, mustGet(t, s, "click-b").UpdatedAt
	if stampA.Before(before) || stampA.After(after) || stampA.Location() != time.UTC || stampA.Nanosecond()%1000 != 0 {
		t.Errorf("UpdatedAt after AddClicks = %v, want a UTC, microsecond time in [%v, %v]", stampA, before, after)
	}
	if stampB.After(stampA) || stampB.Before(before.Add(-time.Hour)) {
		t.Errorf("UpdatedAt of a link given a zero count = %v, want its earlier stamp (<= %v)", stampB, stampA)
	}
	checkLink(t, "link not in the batch", mustGet(t, s, "click-c"), untouched)
	for _, m := range []map[string]int64{nil, {}, {"no-such-code": 1}} {
		if err := s.AddClicks(ctx, m); err != nil {
			t.Fatalf("AddClicks(%v): %v", m, err)
		}
	}
	wantCode(t, s.AddClicks(ctx, map[string]int64{"click-a": 100, "click-b": -1}), links.EINVALID,
		"AddClicks with a negative count")
	if a, b := clicksOf(t, s, "click-a"), clicksOf(t, s, "click-b"); a != 5 || b != 15 {
		t.Fatalf("clicks a=%d b=%d, want 5 and 15 (a rejected batch writes nothing)", a, b)
	}
}

// createMany creates n links named prefix0..prefix(n-1) from 8 goroutines.
func createMany(t *testing.T, s store.Store, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				errs <- s.CreateLink(t.Context(), newLink(fmt.Sprintf("%s%d", prefix, i)))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("CreateLink: %v", err)
		}
	}
}

func testAddClicksBatch(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	const n = 400
	createMany(t, s, "batch", n)
	counts := make(map[string]int64, 2*n)
	for i := range n {
		counts[fmt.Sprintf("batch%d", i)] = int64(i + 1)
		counts[fmt.Sprintf("ghost%d", i)] = 1
	}
	if err := s.AddClicks(t.Context(), counts); err != nil {
		t.Fatalf("AddClicks of %d codes: %v", len(counts), err)
	}
	for _, l := range listAll(t, s, n) {
		if want := counts[l.Code]; l.Clicks != want {
			t.Fatalf("%s has %d clicks, want %d", l.Code, l.Clicks, want)
		}
	}
}

func testAddClicksConcurrent(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	const workers, rounds, codes = 8, 25, 5
	createMany(t, s, "conc", codes)
	batch := map[string]int64{"ghost": 1}
	for k := range codes {
		batch[fmt.Sprintf("conc%d", k)] = int64(k + 1)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	start := make(chan struct{})
	for range workers {
		wg.Go(func() {
			<-start
			for range rounds {
				errs <- s.AddClicks(t.Context(), batch)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent AddClicks: %v", err)
		}
	}
	for k := range codes {
		code := fmt.Sprintf("conc%d", k)
		if got, want := clicksOf(t, s, code), int64(workers*rounds*(k+1)); got != want {
			t.Errorf("%s: %d clicks, want %d", code, got, want)
		}
	}
}

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func checkKey(t *testing.T, what string, got, want *links.APIKey) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil key", what)
	}
	if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.Hash, want.Hash) || got.Admin != want.Admin ||
		!sameTime(got.CreatedAt, want.CreatedAt) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, *got, *want)
	}
}

func testAPIKeys(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := t.Context()
	k1 := &links.APIKey{ID: "key1", Name: "ops team", Hash: hashOf("secret-1"), Admin: true,
		CreatedAt: base.Add(999 * time.Nanosecond).In(time.FixedZone("X", 3600))}
	want := *k1
	want.CreatedAt = base
	if err := s.CreateAPIKey(ctx, k1); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	checkKey(t, "key after CreateAPIKey", k1, &want)
	got, err := s.GetAPIKey(ctx, "key1")
	if err != nil {
		t.Fatal(err)
	}
	checkKey(t, "GetAPIKey", got, &want)

	dup := &links.APIKey{ID: "key1", Name: "intruder", Hash: hashOf("other"), CreatedAt: base}
	wantCode(t, s.CreateAPIKey(ctx, dup), links.ECONFLICT, "CreateAPIKey of existing id")
	got, _ = s.GetAPIKey(ctx, "key1")
	checkKey(t, "key after conflict", got, &want)

	repl := &links.APIKey{ID: "key1", Name: "", Hash: hashOf("rotated"), Admin: false, CreatedAt: base.Add(time.Hour)}
	if err := s.PutAPIKey(ctx, repl); err != nil {
		t.Fatalf("PutAPIKey replace: %v", err)
	}
	got, _ = s.GetAPIKey(ctx, "key1")
	checkKey(t, "replaced key", got, repl)

	k2 := &links.APIKey{ID: "key2", Name: "ci", Hash: hashOf("secret-2"), CreatedAt: base}
	if err := s.PutAPIKey(ctx, k2); err != nil {
		t.Fatalf("PutAPIKey insert: %v", err)
	}
	got, _ = s.GetAPIKey(ctx, "key2")
	checkKey(t, "inserted key", got, k2)
	got, _ = s.GetAPIKey(ctx, "key1")
	checkKey(t, "other key untouched", got, repl)

	_, err = s.GetAPIKey(ctx, "KEY1")
	wantCode(t, err, links.ENOTFOUND, "GetAPIKey in other case")
}

func testFreshCopies(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := t.Context()
	in := newLink("fresh")
	mustCreate(t, s, in)
	want := *in
	in.URL, in.Clicks = "https://mutated.example/", 99 // the store must not keep the caller's value
	a := mustGet(t, s, "fresh")
	b := mustGet(t, s, "fresh")
	if a == b {
		t.Fatal("two GetLink calls returned the same pointer")
	}
	a.URL, a.Clicks, a.CreatedAt = "https://evil.example/", 1000, time.Time{}
	checkLink(t, "GetLink after mutating an earlier result", mustGet(t, s, "fresh"), &want)
	page, err := s.ListLinks(ctx, links.ListParams{Limit: 1})
	if err != nil || len(page) != 1 {
		t.Fatalf("ListLinks: %v, %v", ids(page), err)
	}
	page[0].URL = "https://evil.example/"
	checkLink(t, "GetLink after mutating a listed link", mustGet(t, s, "fresh"), &want)

	k := &links.APIKey{ID: "copy", Hash: hashOf("x"), CreatedAt: base}
	if err := s.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	k.Hash[0] ^= 0xff // mutate the caller's slice after the call
	got, err := s.GetAPIKey(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Hash, hashOf("x")) {
		t.Fatal("store kept the caller's hash slice")
	}
	got.Hash[0] ^= 0xff
	again, _ := s.GetAPIKey(ctx, "copy")
	if !bytes.Equal(again.Hash, hashOf("x")) {
		t.Fatal("GetAPIKey returned a shared hash slice")
	}
}

func testSurvivesReopen(t *testing.T, open OpenFunc) {
	ctx := t.Context()
	s := open(t)
	a := newLink("durable-a")
	a.ExpiresAt = base.Add(time.Hour)
	mustCreate(t, s, a)
	b := mustCreate(t, s, newLink("durable-b"))
	mustCreate(t, s, newLink("durable-c"))
	if err := s.DeleteLink(ctx, "durable-c", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.AddClicks(ctx, map[string]int64{"durable-a": 7}); err != nil {
		t.Fatal(err)
	}
	a = mustGet(t, s, "durable-a") // with its clicks and UpdatedAt
	if a.Clicks != 7 {
		t.Fatalf("clicks %d, want 7", a.Clicks)
	}
	k := &links.APIKey{ID: "durable", Name: "n", Hash: hashOf("d"), Admin: true, CreatedAt: base}
	if err := s.PutAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openStore(t, open) // runs the migrations again over the existing schema
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after reopen: %v", err)
	}
	checkLink(t, "link a after reopen", mustGet(t, s, "durable-a"), a)
	checkLink(t, "link b after reopen", mustGet(t, s, "durable-b"), b)
	_, err := s.GetLink(ctx, "durable-c")
	wantCode(t, err, links.ENOTFOUND, "deleted link after reopen")
	got, err := s.GetAPIKey(ctx, "durable")
	if err != nil {
		t.Fatal(err)
	}
	checkKey(t, "key after reopen", got, k)
	wantCode(t, s.CreateLink(ctx, newLink("durable-a")), links.ECONFLICT, "unique index after reopen")
	d := mustCreate(t, s, newLink("durable-d"))
	if d.ID <= b.ID {
		t.Fatalf("id after reopen %d, want > %d", d.ID, b.ID)
	}
}

func testConcurrentSameCode(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	const n = 200
	ls := make([]*links.Link, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		ls[i] = &links.Link{Code: "contended", URL: fmt.Sprintf("https://example.com/%d", i),
			Redirect: links.RedirectFound, CreatedAt: base}
		wg.Go(func() {
			<-start
			errs[i] = s.CreateLink(t.Context(), ls[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	conflicts := 0
	for i, err := range errs {
		switch links.ErrorCode(err) {
		case "":
			if winner >= 0 {
				t.Errorf("creates %d and %d of one code both succeeded", winner, i)
			}
			winner = i
		case links.ECONFLICT:
			conflicts++
			if ls[i].ID != 0 {
				t.Errorf("losing create %d set ID %d", i, ls[i].ID)
			}
		default:
			t.Errorf("create %d: unexpected error %v", i, err)
		}
	}
	if winner < 0 || conflicts != n-1 {
		t.Fatalf("%d concurrent creates of one code: winner %d, %d conflicts; want exactly 1 and %d", n, winner, conflicts, n-1)
	}
	checkLink(t, "the stored link is the winner's", mustGet(t, s, "contended"), ls[winner])
}

func testConcurrentDistinctCodes(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	const n = 200
	ls := make([]*links.Link, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		ls[i] = newLink(fmt.Sprintf("distinct%03d", i))
		wg.Go(func() {
			<-start
			errs[i] = s.CreateLink(t.Context(), ls[i])
		})
	}
	close(start)
	wg.Wait()
	seen := map[int64]string{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if prev, dup := seen[ls[i].ID]; dup || ls[i].ID <= 0 {
			t.Fatalf("%s got id %d (also given to %q)", ls[i].Code, ls[i].ID, prev)
		}
		seen[ls[i].ID] = ls[i].Code
	}
	for _, l := range listAll(t, s, n) {
		if seen[l.ID] != l.Code {
			t.Fatalf("listed %q with id %d, created as %q", l.Code, l.ID, seen[l.ID])
		}
	}
}

// testReadYourWrites interleaves writers and readers: a link must be readable
// as soon as CreateLink returns, and gone as soon as DeleteLink returns.
func testReadYourWrites(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*4)
	for w := range workers {
		wg.Go(func() {
			ctx := t.Context()
			for i := range each {
				l := newLink(fmt.Sprintf("ryw-%d-%d", w, i))
				if err := s.CreateLink(ctx, l); err != nil {
					errs <- fmt.Errorf("create %s: %w", l.Code, err)
					continue
				}
				got, err := s.GetLink(ctx, l.Code)
				if err != nil {
					errs <- fmt.Errorf("get %s right after create: %w", l.Code, err)
					continue
				}
				if got.ID != l.ID {
					errs <- fmt.Errorf("get %s: id %d, want %d", l.Code, got.ID, l.ID)
				}
				if _, err := s.ListLinks(ctx, links.ListParams{Limit: 5}); err != nil {
					errs <- fmt.Errorf("list: %w", err)
				}
				if i%3 == 0 {
					if err := s.DeleteLink(ctx, l.Code, 0); err != nil {
						errs <- fmt.Errorf("delete %s: %w", l.Code, err)
					}
					if _, err := s.GetLink(ctx, l.Code); links.ErrorCode(err) != links.ENOTFOUND {
						errs <- fmt.Errorf("get %s right after delete: %v, want ENOTFOUND", l.Code, err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testCanceledContext(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	mustCreate(t, s, newLink("ctx-exists"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want context.Canceled", what, err)
		}
	}
	check("CreateLink", s.CreateLink(ctx, newLink("ctx-new")))
	_, err := s.GetLink(ctx, "ctx-exists")
	check("GetLink", err)
	_, err = s.ListLinks(ctx, links.ListParams{Limit: 1})
	check("ListLinks", err)
	check("AddClicks", s.AddClicks(ctx, map[string]int64{"ctx-exists": 1}))
	check("DeleteLink", s.DeleteLink(ctx, "ctx-exists", 0))
	check("PutAPIKey", s.PutAPIKey(ctx, &links.APIKey{ID: "k", Hash: hashOf("k"), CreatedAt: base}))

	// Nothing happened, and the Store still works.
	_, err = s.GetLink(t.Context(), "ctx-new")
	wantCode(t, err, links.ENOTFOUND, "link created with a canceled context")
	if l := mustGet(t, s, "ctx-exists"); l.Clicks != 0 {
		t.Errorf("clicks added with a canceled context: %d", l.Clicks)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testBadInput(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := t.Context()
	wantCode(t, s.CreateLink(ctx, nil), links.EINVALID, "CreateLink(nil)")
	wantCode(t, s.CreateAPIKey(ctx, nil), links.EINVALID, "CreateAPIKey(nil)")
	wantCode(t, s.PutAPIKey(ctx, nil), links.EINVALID, "PutAPIKey(nil)")
	for _, h := range [][]byte{nil, make([]byte, 31), make([]byte, 33)} {
		k := &links.APIKey{ID: "badhash", Hash: h, CreatedAt: base}
		wantCode(t, s.CreateAPIKey(ctx, k), links.EINVALID, fmt.Sprintf("CreateAPIKey with a %d-byte hash", len(h)))
		wantCode(t, s.PutAPIKey(ctx, k), links.EINVALID, fmt.Sprintf("PutAPIKey with a %d-byte hash", len(h)))
	}
	_, err := s.GetAPIKey(ctx, "badhash")
	wantCode(t, err, links.ENOTFOUND, "key with a bad hash")
	// Odd but harmless strings are data, not SQL.
	odd := newLink("x'); DROP TABLE links;--")
	mustCreate(t, s, odd)
	checkLink(t, "odd code", mustGet(t, s, odd.Code), odd)
}

// UpdatedAtIsMonotonic checks that AddClicks stamps UpdatedAt from the
// store's clock and never moves it back (a second instance, or a clock step
// back, must not make Last-Modified go backwards). open opens a fresh, empty
// store whose clock is now.
func UpdatedAtIsMonotonic(t *testing.T, open func(t *testing.T, now func() time.Time) store.Store) {
	t2 := time.Date(2030, 1, 2, 3, 4, 5, 678901234, time.UTC)
	clock := t2
	s := open(t, func() time.Time { return clock })
	defer s.Close()
	ctx := t.Context()
	if err := s.CreateLink(ctx, &links.Link{Code: "stamp", URL: "https://example.com/", Redirect: 302}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddClicks(ctx, map[string]int64{"stamp": 1}); err != nil {
		t.Fatal(err)
	}
	clock = t2.Add(-time.Hour) // another instance, or a clock step back
	if err := s.AddClicks(ctx, map[string]int64{"stamp": 1}); err != nil {
		t.Fatal(err)
	}
	l, err := s.GetLink(ctx, "stamp")
	if err != nil {
		t.Fatal(err)
	}
	if want := t2.Truncate(time.Microsecond); !l.UpdatedAt.Equal(want) || l.Clicks != 2 {
		t.Fatalf("UpdatedAt %v, clicks %d; want %v and 2", l.UpdatedAt, l.Clicks, want)
	}
}

// BenchmarkCreate measures durable creates per second from concurrent
// callers (1, 8 and 32 goroutines per GOMAXPROCS); every create is its own
// committed transaction. open returns a Store for b, closed by the benchmark;
// codes are unique per run, so the database may be shared between runs.
func BenchmarkCreate(b *testing.B, open func(b *testing.B) store.Store) {
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			s := open(b)
			defer s.Close()
			prefix := fmt.Sprintf("p%d-%d-", par, time.Now().UnixNano())
			var n atomic.Int64
			created := time.Now().UTC().Truncate(time.Microsecond)
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l := &links.Link{Code: fmt.Sprintf("%s%d", prefix, n.Add(1)), URL: "https://example.com/some/long/path",
						Redirect: links.RedirectFound, CreatedAt: created}
					if err := s.CreateLink(b.Context(), l); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
		})
	}
}

// listAll returns every link of s (at most links.MaxListLimit), failing t
// unless there are exactly n.
func listAll(t *testing.T, s store.Store, n int) []*links.Link {
	t.Helper()
	all, err := s.ListLinks(t.Context(), links.ListParams{Limit: links.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("listed %d links, want %d", len(all), n)
	}
	return all
}

// BenchmarkAddClicks measures one click flush: a batch of counts for n
// links (n of 100 and 10,000, every code in the table), applied as
// clicks.Counter applies it. It reports the cost per code, the unit a
// redirect pays for (a flush under load carries about one code per
// redirect of the last interval when traffic spreads over many links).
// open returns a Store for b, closed by the benchmark.
func BenchmarkAddClicks(b *testing.B, open func(b *testing.B) store.Store) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("codes=%d", n), func(b *testing.B) {
			s := open(b)
			defer s.Close()
			prefix := fmt.Sprintf("ac%d-%d-", n, time.Now().UnixNano())
			created := time.Now().UTC().Truncate(time.Microsecond)
			counts := make(map[string]int64, n)
			for i := range n {
				l := &links.Link{Code: fmt.Sprintf("%s%d", prefix, i), URL: "https://example.com/some/long/path",
					Redirect: links.RedirectFound, CreatedAt: created}
				if err := s.CreateLink(b.Context(), l); err != nil {
					b.Fatal(err)
				}
				counts[l.Code] = int64(i%7 + 1)
			}
			for b.Loop() { // the timer starts here
				if err := s.AddClicks(b.Context(), counts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/code")
		})
	}
}
