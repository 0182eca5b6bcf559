//go:build !linux

package quiesce

import (
	"errors"
	"syscall"
)

// queueLen is not available here: Close then closes without waiting.
func queueLen(syscall.RawConn) (int, error) { return 0, errors.ErrUnsupported }

// fence, handshakes and stopListening are not needed here: queueLen fails,
// so drain never runs.
func fence(syscall.RawConn) error         { return errors.ErrUnsupported }
func handshakes(int) (int, error)         { return 0, errors.ErrUnsupported }
func stopListening(syscall.RawConn) error { return errors.ErrUnsupported }
