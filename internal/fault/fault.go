// Package fault gives errors a kind that callers across components branch
// on without importing each other: web maps kinds to HTTP statuses, the CLI
// to messages, and components return them for bad input, missing things,
// conflicts, outages and timeouts. An error without a kind is an internal
// fault.
package fault

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Kind classifies an error.
type Kind string

// The kinds. Internal ("") means a bug or an unexpected failure: its text
// is logged, not shown to API clients.
const (
	Internal     Kind = ""
	Invalid      Kind = "invalid"      // the request or input is malformed or does not validate
	NotFound     Kind = "not_found"    // the named thing does not exist (or is not connected)
	Conflict     Kind = "conflict"     // it exists already, or the state forbids the change
	Unavailable  Kind = "unavailable"  // a part it needs is down (Docker, upstream, ...)
	Timeout      Kind = "timeout"      // the other side did not answer in time
	Unauthorized Kind = "unauthorized" // no or bad credentials
	Forbidden    Kind = "forbidden"    // credentials fine, action not allowed
	TooLarge     Kind = "too_large"    // over a size limit or quota
)

// Error is an error with a kind. Msg is meant for the person who sent the
// request: it says what is wrong and where.
type Error struct {
	Kind Kind
	Msg  string // the whole message (a wrapped cause's text included)
	Err  error  // the cause, if any
}

func (e *Error) Error() string {
	if e.Msg == "" && e.Err != nil {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of kind k with a formatted message; %w wraps.
func New(k Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap gives err the kind k (nil stays nil).
func Wrap(k Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Err: err}
}

// KindOf returns the kind of the outermost kinded error in err's chain, or
// Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err has kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// DiskFull reports whether err says a file system is full: ENOSPC from the
// kernel, or SQLite's SQLITE_FULL ("database or disk is full"), which its
// driver gives as text only.
func DiskFull(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "database or disk is full") || strings.Contains(s, "no space left on device")
}
