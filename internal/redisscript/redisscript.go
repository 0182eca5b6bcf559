// Package redisscript runs one Lua script for many calls in one round trip.
//
// go-redis's Script.Run falls back from EVALSHA to EVAL when Redis answers
// NOSCRIPT, but only for a single command; a pipeline of EVALSHA needs the
// same fallback per command. The rate limiter's batches and the cache's
// invalidations both pipeline a script, so the fallback lives here once.
package redisscript

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Pipeliner is the part of a Redis client Pipelined uses; *redis.Client
// satisfies it.
type Pipeliner interface {
	Pipeline() redis.Pipeliner
}

// Call is one run of the script.
type Call struct {
	Keys []string
	Args []any
}

// Pipelined runs s once per call, EVALSHA in one pipeline, and reports each
// call's final command to done(i, cmd), errors left on the command. A call
// answered NOSCRIPT (the script cache was flushed, so nothing ran) is sent
// again with EVAL, which reloads the script, in a second pipeline; the
// others are reported as soon as the first pipeline returns.
func Pipelined(ctx context.Context, c Pipeliner, s *redis.Script, calls []Call, done func(i int, cmd *redis.Cmd)) {
	cmds := exec(ctx, c, s, calls, false)
	var retry []int
	for i, cmd := range cmds {
		if IsNoScript(cmd.Err()) {
			retry = append(retry, i)
			continue
		}
		done(i, cmd)
	}
	if len(retry) == 0 {
		return
	}
	again := make([]Call, len(retry))
	for j, i := range retry {
		again[j] = calls[i]
	}
	for j, cmd := range exec(ctx, c, s, again, true) {
		done(retry[j], cmd)
	}
}

// exec sends the script for every call in one pipeline (EVALSHA, or EVAL
// when eval is set) and returns the commands in call order.
func exec(ctx context.Context, c Pipeliner, s *redis.Script, calls []Call, eval bool) []*redis.Cmd {
	pipe := c.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, call := range calls {
		if eval {
			cmds[i] = s.Eval(ctx, pipe, call.Keys, call.Args...)
		} else {
			cmds[i] = s.EvalSha(ctx, pipe, call.Keys, call.Args...)
		}
	}
	_, _ = pipe.Exec(ctx) // per-command errors are on cmds
	return cmds
}

// IsNoScript reports whether err is Redis's NOSCRIPT: the script cache does
// not hold the script (SCRIPT FLUSH, restart, failover), so it did not run.
func IsNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}
