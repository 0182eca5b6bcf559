package config

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.BaseURL.String() != "http://localhost:8080" || c.DatabaseURL != "sqlite://linkgate.db" ||
		c.RedisURL != "" || !c.PublicCreate || c.RedirectMaxAge != 30*time.Second || c.ShutdownDelay != 5*time.Second ||
		c.DrainTimeout != 20*time.Second || c.Instances != 1 || c.RateCreate.Limit != 30 || c.RateCreate.Period != time.Minute || c.RateCreate.Burst != 10 ||
		!c.RateRedirect.FailOpen || c.RateCreate.FailOpen || c.RateAPI.Name != "api" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestPrecedenceEnvThenFlags(t *testing.T) {
	c, err := Load([]string{"-addr", "127.0.0.1:9999"}, env(map[string]string{
		"LINKGATE_ADDR": "127.0.0.1:7000", "LINKGATE_PUBLIC_CREATE": "false", "LINKGATE_CORS_ORIGINS": "https://a.example, http://b.example:3000/",
		"LINKGATE_BASE_URL": "https://sho.rt/",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" || c.PublicCreate || len(c.CORSOrigins) != 2 || c.CORSOrigins[1] != "http://b.example:3000" ||
		c.BaseURL.String() != "https://sho.rt" || c.OwnHosts()[0] != "sho.rt" {
		t.Fatalf("got %+v", c)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"LINKGATE_ADDR":               "nonsense",
		"LINKGATE_BASE_URL":           "ftp://x",
		"LINKGATE_DATABASE_URL":       "mysql://x",
		"LINKGATE_REDIS_URL":          "localhost:6379",
		"LINKGATE_TRUSTED_PROXIES":    "10.0.0.0/8,banana",
		"LINKGATE_CORS_ORIGINS":       "*",
		"LINKGATE_RATELIMIT_CREATE":   "30 per minute",
		"LINKGATE_RATELIMIT_API":      "0/1m",
		"LINKGATE_RATELIMIT_REDIRECT": "10/1m:x",
		"LINKGATE_INSTANCES":          "0",
		"LINKGATE_ADMIN_KEY":          "short",
		"LINKGATE_PUBLIC_CREATE":      "maybe",
		"LINKGATE_REDIRECT_MAX_AGE":   "30",
		"LINKGATE_DRAIN_TIMEOUT":      "0s",
		"LINKGATE_LOG_LEVEL":          "loud",
		"LINKGATE_CACHE_SIZE":         "-1",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(nil, env(map[string]string{name: value}), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("Load with %s=%q: err %v, want one naming the variable", name, value, err)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"-h"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), s.env) || !strings.Contains(out.String(), "-"+s.flag) {
			t.Errorf("help lacks %s / -%s", s.env, s.flag)
		}
	}
}
