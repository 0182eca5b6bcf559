package ratelimit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	tests := map[string]struct {
		spec string
		want Policy
	}{
		"design redirect default": {"1200/1m:200", Policy{Limit: 1200, Period: time.Minute, Burst: 200}},
		"design create default":   {"30/1m:10", Policy{Limit: 30, Period: time.Minute, Burst: 10}},
		"burst defaults to N":     {"100/1h", Policy{Limit: 100, Period: time.Hour, Burst: 100}},
		"bare unit s":             {"10/s", Policy{Limit: 10, Period: time.Second, Burst: 10}},
		"bare unit m":             {"30/m:5", Policy{Limit: 30, Period: time.Minute, Burst: 5}},
		"bare unit h":             {"5/h", Policy{Limit: 5, Period: time.Hour, Burst: 5}},
		"bare unit d":             {"1000/d", Policy{Limit: 1000, Period: 24 * time.Hour, Burst: 1000}},
		"days":                    {"7/7d:1", Policy{Limit: 7, Period: 7 * 24 * time.Hour, Burst: 1}},
		"go duration":             {"3/30s", Policy{Limit: 3, Period: 30 * time.Second, Burst: 3}},
		"compound duration":       {"3/1m30s:2", Policy{Limit: 3, Period: 90 * time.Second, Burst: 2}},
		"milliseconds":            {"1/500ms", Policy{Limit: 1, Period: 500 * time.Millisecond, Burst: 1}},
		"spaces":                  {"  10 / 1s : 3 ", Policy{Limit: 10, Period: time.Second, Burst: 3}},
		"burst above N":           {"1/1s:5", Policy{Limit: 1, Period: time.Second, Burst: 5}},
		"off":                     {"off", Policy{Disabled: true}},
		"OFF":                     {" OFF ", Policy{Disabled: true}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePolicy("create", tt.spec)
			if err != nil {
				t.Fatalf("ParsePolicy(%q): %v", tt.spec, err)
			}
			tt.want.Name = "create"
			if got != tt.want {
				t.Fatalf("ParsePolicy(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
			if !got.Disabled {
				again, err := ParsePolicy("create", got.String())
				if err != nil || again != got {
					t.Fatalf("String() %q does not round-trip: %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := map[string]struct {
		name, spec string
		wantInErr  string
	}{
		"empty":            {"api", "", "empty"},
		"no period":        {"api", "100", "missing /period"},
		"zero N":           {"api", "0/1m", "N must be a positive integer"},
		"negative N":       {"api", "-1/1m", "N must be a positive integer"},
		"N not a number":   {"api", "ten/1m", "N must be a positive integer"},
		"empty period":     {"api", "10/", "period is empty"},
		"bad period":       {"api", "10/fortnight", "not a duration"},
		"negative period":  {"api", "10/-1s", "must be positive"},
		"zero burst":       {"api", "10/1m:0", "burst must be a positive integer"},
		"bad burst":        {"api", "10/1m:x", "burst must be a positive integer"},
		"bad days":         {"api", "10/0d", "days must be an integer"},
		"sub-ms period":    {"api", "10/10us", "at least 1ms"},
		"fractional µs":    {"api", "10/1000500ns", "whole number of microseconds"},
		"too large":        {"api", "1/365d:1000000", "too large"},
		"bad name":         {"API", "10/1m", "name must match"},
		"empty name":       {"", "10/1m", "name must match"},
		"name with quote":  {"a\"b", "10/1m", "name must match"},
		"name with colon":  {"a:b", "off", "name must match"},
		"limit above 2^52": {"api", "9000000000000000/1s:1", "limit must be from 1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := ParsePolicy(tt.name, tt.spec)
			if err == nil {
				t.Fatalf("ParsePolicy(%q, %q) = %+v, want an error", tt.name, tt.spec, p)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("error %q does not say %q", err, tt.wantInErr)
			}
			if tt.name != "" && validName(tt.name) && !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("error %q does not name the policy %q", err, tt.name)
			}
		})
	}
}

func TestPolicyWindow(t *testing.T) {
	tests := map[string]struct {
		spec string
		want time.Duration
	}{
		"create 30/1m:10": {"30/1m:10", 20 * time.Second},
		"redirect":        {"1200/1m:200", 10 * time.Second},
		"burst = N":       {"100/1h", time.Hour},
		"uneven":          {"7/1h:1", 514285715 * time.Microsecond}, // ⌈3.6e9/7⌉ µs
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := mustPolicy(t, "p", tt.spec).Window(); got != tt.want {
				t.Fatalf("Window() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckRejectsBadCost(t *testing.T) {
	p := mustPolicy(t, "p", "10/1s:5")
	for _, cost := range []int64{0, -1, 6} {
		if err := check(p, cost); !errors.Is(err, ErrInvalid) {
			t.Errorf("check(cost=%d) = %v, want ErrInvalid", cost, err)
		}
	}
	if err := check(Policy{Name: "p"}, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("check(zero policy) = %v, want ErrInvalid", err)
	}
	if err := check(p, 5); err != nil {
		t.Errorf("check(cost=burst) = %v", err)
	}
}
