package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestStuckDatabaseAnswers503: with the links table locked in PostgreSQL
// (every links statement waits), requests that need the database answer
// 503 problem+json with Retry-After after LINKGATE_STORE_TIMEOUT instead of
// hanging, and a create that got 503 wrote nothing; once the lock goes,
// requests succeed again.
func TestStuckDatabaseAnswers503(t *testing.T) {
	dbURL := testenv.PostgresURL(t)
	s := startServer(t, dbURL, "LINKGATE_STORE_TIMEOUT=300ms")
	s.create(t, `{"url":"https://example.com/stuck","code":"stuck-a"}`)

	unlock := testenv.LockTable(t, dbURL, "links")

	for _, tc := range []struct {
		name, method, path string
		body               []byte
		header             []string
	}{
		{"metadata", "GET", "/api/v1/links/stuck-a", nil, []string{adminAuth}},
		{"redirect of an uncached code", "GET", "/never-made", nil, nil},
		{"create", "POST", "/api/v1/links", []byte(`{"url":"https://example.com/during","code":"during-lock"}`), []string{jsonCT}},
		{"list", "GET", "/api/v1/links", nil, []string{adminAuth}},
	} {
		start := time.Now()
		r := do(t, tc.method, s.URL+tc.path, tc.body, tc.header...)
		took := time.Since(start)
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") != "1" ||
			r.Header.Get("Content-Type") != "application/problem+json" || r.json(t)["type"] != "urn:linkgate:problem:unavailable" {
			t.Fatalf("%s with the database stuck: %d %v %s, want 503 problem+json unavailable with Retry-After: 1",
				tc.name, r.Status, r.Header, r.Body)
		}
		if took > 5*time.Second {
			t.Fatalf("%s took %v with a 300ms store timeout", tc.name, took)
		}
	}

	unlock()
	if r := do(t, "GET", s.URL+"/api/v1/links/stuck-a", nil, adminAuth); r.Status != http.StatusOK {
		t.Fatalf("metadata after the lock: %d %s", r.Status, r.Body)
	}
	if r := do(t, "GET", s.URL+"/api/v1/links/during-lock", nil, adminAuth); r.Status != http.StatusNotFound {
		t.Fatalf("the create that got 503: %d %s, want 404 (nothing written)", r.Status, r.Body)
	}
	if r := do(t, "GET", s.URL+"/stuck-a", nil); r.Status != http.StatusFound || r.Header.Get("Location") != "https://example.com/stuck" {
		t.Fatalf("redirect after the lock: %d %v", r.Status, r.Header)
	}
}
