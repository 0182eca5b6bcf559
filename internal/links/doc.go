// Package links is linkgate's domain: the Link type, the error codes every
// other package maps to HTTP, short-code generation, URL and alias
// validation, and the Service that creates, resolves, lists and deletes links.
//
// Adapters (internal/store, internal/cache, internal/handlers) import this
// package; it imports none of them. The Service talks to them only through the
// small interfaces it declares in service.go.
//
// Everything exported here is safe for concurrent use unless its comment says
// otherwise.
package links
