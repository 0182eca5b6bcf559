package cache

import (
	"context"
	"testing"

	"github.com/linkgate/linkgate/internal/testenv"
)

// benchCache returns a cache holding code in L1 (and L2 when withRedis).
func benchCache(b *testing.B, code string, withRedis bool) *Cache {
	b.Helper()
	want := testLink(code)
	cfg := Config{Source: newSource(want)}
	if withRedis {
		cfg.Redis = redisClient(b, testenv.RedisURL(b))
		cfg.KeyPrefix = testenv.KeyPrefix(b)
		cfg.RedisTimeout = testRedisTimeout
	}
	c := newCache(b, cfg)
	if _, err := c.Resolve(context.Background(), code); err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkResolveL1Hit(b *testing.B) {
	c := benchCache(b, "abc1234", false)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Resolve(ctx, "abc1234"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveL1HitParallel(b *testing.B) {
	c := benchCache(b, "abc1234", false)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Resolve(ctx, "abc1234"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkResolveL1NegativeHit(b *testing.B) {
	c := newCache(b, Config{Source: newSource()})
	ctx := context.Background()
	_, _ = c.Resolve(ctx, "nothere")
	b.ReportAllocs()
	for b.Loop() {
		// Compared by identity: links.ErrorCode's errors.As would allocate.
		if _, err := c.Resolve(ctx, "nothere"); err != c.notFound {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveL2Hit evicts the code from L1 before each Resolve, so each
// one is an MGET against the real Redis plus a decode.
func BenchmarkResolveL2Hit(b *testing.B) {
	c := benchCache(b, "abc1234", true)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c.l1.remove("abc1234")
		if _, err := c.Resolve(ctx, "abc1234"); err != nil {
			b.Fatal(err)
		}
	}
}
