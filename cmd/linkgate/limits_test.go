package main

import (
	"testing"

	"github.com/linkgate/linkgate/internal/ratelimit"
)

func TestRedirectLeaseSize(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   int64
	}{
		{"1200/1m:200", 64},      // the default: 2 tokens per 100 ms
		{"640/1s", 64},           // exactly the floor
		{"5000/1s", 500},         // 100 ms of the rate
		{"300000/1m", 500},       // the same rate over a minute
		{"100000000/1s", 1024},   // the cap
		{"off", 64},              // disabled: unused, but valid
		{"50000/24h:50000", 64},  // the Redis-kill e2e policy
		{"10240/1s:10240", 1024}, // 1,024 exactly
		{"10250/1s:10250", 1024}, // capped
		{"6401/10s:6401", 64},    // 64.01 rounds down to the floor
	} {
		p, err := ratelimit.ParsePolicy("redirect", tc.policy)
		if err != nil {
			t.Fatalf("%s: %v", tc.policy, err)
		}
		if got := redirectLeaseSize(p); got != tc.want {
			t.Errorf("redirectLeaseSize(%s) = %d, want %d", tc.policy, got, tc.want)
		}
	}
}
