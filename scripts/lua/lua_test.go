package lua

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestTokenBucketRunsOnRedis loads the embedded script into a real Redis
// (which compiles it) and runs one decision on a fresh key: a 1-per-second
// bucket of 2 takes a token and reports 1 left, no wait, and one second (in
// microseconds) until full.
func TestTokenBucketRunsOnRedis(t *testing.T) {
	src := TokenBucket()
	if !strings.Contains(src, "redis.call('TIME')") {
		t.Fatal("embedded token_bucket.lua does not read the server clock")
	}
	opt, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		testenv.Unavailable(t, "redis: %v", err)
	}

	sha, err := c.ScriptLoad(ctx, src).Result()
	if err != nil {
		t.Fatalf("SCRIPT LOAD: %v", err)
	}
	sum := sha1.Sum([]byte(src))
	if sha != hex.EncodeToString(sum[:]) {
		t.Fatalf("server sha %s differs from the source's", sha)
	}

	key := testenv.KeyPrefix(t) + "{p:k}"
	defer c.Del(context.Background(), key)
	got, err := c.EvalSha(ctx, sha, []string{key}, 1, 1_000_000, 2, 1).Int64Slice()
	if err != nil {
		t.Fatalf("EVALSHA: %v", err)
	}
	want := []int64{1, 1, 0, 1_000_000}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("token_bucket returned %v, want %v", got, want)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("bucket PTTL %v, want within (0, 1s]", ttl)
	}
}
