package problem

import (
	"encoding/json"
	"testing"
)

func TestMarshalKeepsStandardMembersOverExtensions(t *testing.T) {
	p := New(429, "quota-exceeded", "Too many requests.", "Try again in 3 s.").With("policy", "create").With("status", 200)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["type"] != "urn:linkgate:problem:quota-exceeded" || m["status"] != float64(429) || m["title"] != "Too many requests." ||
		m["detail"] != "Try again in 3 s." || m["policy"] != "create" {
		t.Fatalf("got %s", b)
	}
	if _, ok := m["detail"]; !ok {
		t.Fatal("detail missing")
	}
	if b, _ := json.Marshal(New(404, "not-found", "Not found.", "")); string(b) != `{"status":404,"title":"Not found.","type":"urn:linkgate:problem:not-found"}` {
		t.Fatalf("empty detail must be omitted: %s", b)
	}
}
