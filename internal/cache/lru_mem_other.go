//go:build !linux

package cache

// lruMem is Go memory for one L1 shard: the anonymous mapping of
// lru_mem_linux.go is Linux only here.
type lruMem struct{ b []byte }

func newLRUMem(n int) *lruMem { return &lruMem{b: make([]byte, n)} }

func (m *lruMem) release() { clear(m.b) }
