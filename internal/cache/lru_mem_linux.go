//go:build linux

package cache

import "syscall"

// lruMem is memory outside the Go heap for one L1 shard: an anonymous
// private mapping, reserved without swap accounting (MAP_NORESERVE), so only
// the pages written count as resident. It is never unmapped: a Cache's
// shards live as long as the process (one per process in linkgate), and
// release gives the pages back.
type lruMem struct{ b []byte }

func newLRUMem(n int) *lruMem {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err != nil {
		return &lruMem{b: make([]byte, n)} // no mapping: Go memory works the same, only costlier
	}
	return &lruMem{b: b}
}

// release zeroes the memory and returns its pages to the system.
func (m *lruMem) release() {
	if err := syscall.Madvise(m.b, syscall.MADV_DONTNEED); err != nil {
		clear(m.b)
	}
}
