package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/internal/links"
	"github.com/linkgate/linkgate/internal/store"
)

// Store operations, indexes into the op label values StoreOps returns.
const (
	opCreateLink = iota
	opGetLink
	opDeleteLink
	opListLinks
	opAddClicks
	opCreateAPIKey
	opPutAPIKey
	opGetAPIKey
	opPing
	numOps
)

// StoreOps returns every op label value of
// linkgate_store_operation_duration_seconds, in a stable order: one per
// store.Store method except Close.
func StoreOps() []string {
	return []string{
		opCreateLink:   "create_link",
		opGetLink:      "get_link",
		opDeleteLink:   "delete_link",
		opListLinks:    "list_links",
		opAddClicks:    "add_clicks",
		opCreateAPIKey: "create_api_key",
		opPutAPIKey:    "put_api_key",
		opGetAPIKey:    "get_api_key",
		opPing:         "ping",
	}
}

// InstrumentStore returns a store.Store that forwards every call to s and
// observes its duration, errors included, in
// linkgate_store_operation_duration_seconds{op} (op is the method name in
// snake case: create_link, get_link, ..., ping). Close is forwarded
// untimed. Arguments, results and errors pass through unchanged. The result
// only has the store.Store methods: a caller that type-asserts the concrete
// store must do so on s. When s or m is nil, s is returned as is.
func InstrumentStore(s store.Store, m *Metrics) store.Store {
	if s == nil || m == nil {
		return s
	}
	return &measuredStore{next: s, ops: &m.storeOps}
}

// measuredStore is the decorator InstrumentStore returns.
type measuredStore struct {
	next store.Store
	ops  *[numOps]prometheus.Observer
}

var _ store.Store = (*measuredStore)(nil)

// since observes the time elapsed since start under op. Use it as
// defer s.since(op, time.Now()): the arguments are evaluated at the defer.
func (s *measuredStore) since(op int, start time.Time) {
	s.ops[op].Observe(time.Since(start).Seconds())
}

func (s *measuredStore) CreateLink(ctx context.Context, l *links.Link) error {
	defer s.since(opCreateLink, time.Now())
	return s.next.CreateLink(ctx, l)
}

func (s *measuredStore) GetLink(ctx context.Context, code string) (*links.Link, error) {
	defer s.since(opGetLink, time.Now())
	return s.next.GetLink(ctx, code)
}

func (s *measuredStore) DeleteLink(ctx context.Context, code string, id int64) error {
	defer s.since(opDeleteLink, time.Now())
	return s.next.DeleteLink(ctx, code, id)
}

func (s *measuredStore) ListLinks(ctx context.Context, p links.ListParams) ([]*links.Link, error) {
	defer s.since(opListLinks, time.Now())
	return s.next.ListLinks(ctx, p)
}

func (s *measuredStore) AddClicks(ctx context.Context, counts map[string]int64) error {
	defer s.since(opAddClicks, time.Now())
	return s.next.AddClicks(ctx, counts)
}

func (s *measuredStore) CreateAPIKey(ctx context.Context, k *links.APIKey) error {
	defer s.since(opCreateAPIKey, time.Now())
	return s.next.CreateAPIKey(ctx, k)
}

func (s *measuredStore) PutAPIKey(ctx context.Context, k *links.APIKey) error {
	defer s.since(opPutAPIKey, time.Now())
	return s.next.PutAPIKey(ctx, k)
}

func (s *measuredStore) GetAPIKey(ctx context.Context, id string) (*links.APIKey, error) {
	defer s.since(opGetAPIKey, time.Now())
	return s.next.GetAPIKey(ctx, id)
}

func (s *measuredStore) Ping(ctx context.Context) error {
	defer s.since(opPing, time.Now())
	return s.next.Ping(ctx)
}

func (s *measuredStore) Close() error { return s.next.Close() }
