// Package lua holds linkgate's Redis Lua scripts, embedded at build time so
// that the binary needs no files beside it. It has no state: each function
// returns a constant source string, safe to call from any goroutine.
package lua

import _ "embed" // for go:embed

//go:embed token_bucket.lua
var tokenBucket string

// TokenBucket returns the source of token_bucket.lua, the atomic token-bucket
// decision that internal/ratelimit runs with EVALSHA. Its calling convention
// (KEYS, ARGV and the returned array) is documented at the top of the file.
func TokenBucket() string { return tokenBucket }
