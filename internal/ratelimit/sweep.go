package ratelimit

// sweepMap bounds the per-shard maps of LocalLimiter, OverLimitCache and
// Leaser the same way: it deletes the entries stale reports (state that can
// be dropped without loss), then, while more than 7/8 of limit remain,
// arbitrary entries that evictable allows, so that the next sweep is at least
// limit/8 insertions away (amortised O(1) per insertion). evictable may be
// nil (everything is). Called with the shard's lock held.
func sweepMap[K comparable, V any](m map[K]V, limit int, stale, evictable func(V) bool) {
	for k, v := range m {
		if stale(v) {
			delete(m, k)
		}
	}
	keep := limit - limit/8 - 1
	for k, v := range m {
		if len(m) <= keep {
			break
		}
		if evictable == nil || evictable(v) {
			delete(m, k)
		}
	}
}
