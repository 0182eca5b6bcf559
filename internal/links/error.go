package links

import (
	"errors"
	"fmt"
)

// Error codes. They are few on purpose: internal/handlers maps each to one
// HTTP status in a single place, and only EINTERNAL is logged as a fault.
const (
	ECONFLICT     = "conflict"     // 409: the code is taken
	EINVALID      = "invalid"      // 422 (400 for malformed requests): input failed validation
	EBADREQUEST   = "bad_request"  // 400: the request itself is malformed
	ENOTFOUND     = "not_found"    // 404
	EGONE         = "gone"         // 410: the link expired
	EUNAUTHORIZED = "unauthorized" // 401: no or unknown credentials
	EFORBIDDEN    = "forbidden"    // 403: credentials lack the right
	EPRECONDITION = "precondition" // 412: If-Match did not match
	EUNAVAILABLE  = "unavailable"  // 503: a dependency (the database) did not answer in time
	EINTERNAL     = "internal"     // 500: a fault; logged
)

// Error is a domain error with a code and a human-readable message that is
// safe to show to clients. Field names the input that failed, when one did.
type Error struct {
	Code    string
	Message string
	Field   string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("linkgate error: code=%s field=%s message=%s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("linkgate error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an EINVALID *Error about the named input field.
func FieldErrorf(field, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of the first *Error in err's
// chain, or a generic message for any other error (whose text may hold
// internal details and is never shown to clients).
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}
