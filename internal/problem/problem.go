// Package problem is the RFC 9457 problem details body that every error
// response of linkgate carries as application/problem+json.
//
// Any Fiber handler or middleware may return a *Details as its error; the one
// error handler in internal/handlers renders it with its status, keeping any
// headers the handler already set (Retry-After, RateLimit, ...).
package problem

import (
	"encoding/json"
	"fmt"
)

// ContentType is the media type of a problem body.
const ContentType = "application/problem+json"

// TypePrefix starts every problem type URI linkgate emits; the slug after it
// names the problem (quota-exceeded, not-found, invalid-url, ...). A URN: it
// identifies the problem kind without pretending to be a resolvable page.
const TypePrefix = "urn:linkgate:problem:"

// Details is one problem. It implements error so that handlers can return it.
type Details struct {
	// Slug is the last part of the type URI, e.g. "quota-exceeded".
	Slug   string
	Title  string
	Status int
	Detail string
	// Extra holds extension members (e.g. "policy", "field"); keys must not
	// collide with the standard members.
	Extra map[string]any
}

// New returns a problem with the given status, slug, title and detail.
func New(status int, slug, title, detail string) *Details {
	return &Details{Status: status, Slug: slug, Title: title, Detail: detail}
}

// With returns d with the extension member key set to v.
func (d *Details) With(key string, v any) *Details {
	if d.Extra == nil {
		d.Extra = make(map[string]any, 2)
	}
	d.Extra[key] = v
	return d
}

// Error implements error.
func (d *Details) Error() string {
	return fmt.Sprintf("problem %d %s: %s", d.Status, d.Slug, d.Detail)
}

// Type is the full problem type URI.
func (d *Details) Type() string { return TypePrefix + d.Slug }

// MarshalJSON renders the RFC 9457 members plus the extensions.
func (d *Details) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 4+len(d.Extra))
	for k, v := range d.Extra {
		m[k] = v
	}
	m["type"] = d.Type()
	m["title"] = d.Title
	m["status"] = d.Status
	if d.Detail != "" {
		m["detail"] = d.Detail
	}
	return json.Marshal(m)
}
