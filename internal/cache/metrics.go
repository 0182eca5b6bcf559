package cache

// Layers a lookup is counted at, passed to Metrics.CacheRequest.
const (
	LayerLRU   = "lru"   // the in-process L1
	LayerRedis = "redis" // the shared L2
	LayerStore = "store" // the Source
)

// Results a lookup is counted with, passed to Metrics.CacheRequest.
const (
	// ResultHit: the layer held the link (lru, redis) or the Source found it
	// (store).
	ResultHit = "hit"
	// ResultMiss: the layer held nothing for the code (lru, redis) or the
	// Source answered ENOTFOUND (store).
	ResultMiss = "miss"
	// ResultNegativeHit: the layer held a negative entry, so the code is
	// known not to exist (lru, redis).
	ResultNegativeHit = "negative_hit"
	// ResultError: the call failed (redis: any failed or timed-out call,
	// including L2 writes, undecodable values and Invalidate; store: any
	// error other than ENOTFOUND).
	ResultError = "error"
)

// Metrics receives one call per layer a lookup touches. It is declared here,
// by its consumer; a Prometheus recorder elsewhere implements it. Methods are
// called on the request path (an L1 hit calls CacheRequest once), so they
// must be cheap, must not block and must be safe for concurrent use.
//
// Per Resolve, CacheRequest(LayerLRU, ...) is called exactly once. Misses for
// one code are collapsed into one load, so the redis and store layers are
// counted once per load, not once per waiting caller.
//
// Entry counts are not pushed: read Cache.Len and Cache.NegativeLen at scrape
// time (for example with prometheus.NewGaugeFunc). Redis entries are not
// counted, because DBSIZE covers every namespace in the database and SCAN is
// too costly for a scrape.
type Metrics interface {
	// CacheRequest counts one lookup at layer (LayerLRU, LayerRedis,
	// LayerStore) with result (ResultHit, ResultMiss, ResultNegativeHit,
	// ResultError).
	CacheRequest(layer, result string)
}

// nopMetrics is the default Metrics: it records nothing.
type nopMetrics struct{}

func (nopMetrics) CacheRequest(string, string) {}
