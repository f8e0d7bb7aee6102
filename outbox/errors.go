package outbox

import (
	"context"
	"errors"
)

// permanentError marks an error that no retry can fix: the message as it is
// can never be published (too large, invalid, not authorised).
type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() error   { return e.err }
func (e permanentError) Permanent() bool { return true }

// Permanent marks err as permanent. A nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether any error in err's chain declares itself
// permanent through a Permanent() bool method. Anything else is transient:
// when in doubt the relay applies back-pressure rather than dead-lettering,
// because a wrongly parked aggregate delays events while a wrongly retried
// one only waits.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	for e := range walk(err) {
		if p, ok := e.(interface{ Permanent() bool }); ok && p.Permanent() {
			return true
		}
	}
	return false
}

type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }
func (e fatalError) Fatal() bool   { return true }

// Fatal marks err as one no restart can cure: the relay's position in its
// source is gone (a lost replication slot) or it cannot become the
// source's active reader. A supervisor ends the process on it, with the
// error as its message, instead of restarting the relay forever.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return fatalError{err}
}

// IsFatal reports whether any error in err's chain has a Fatal method
// returning true.
func IsFatal(err error) bool {
	for e := range walk(err) {
		if f, ok := e.(interface{ Fatal() bool }); ok && f.Fatal() {
			return true
		}
	}
	return false
}

// IsRetryable reports whether err is worth another attempt: it is neither
// permanent nor the caller's own cancellation.
func IsRetryable(err error) bool {
	if err == nil || IsPermanent(err) {
		return false
	}
	return !errors.Is(err, context.Canceled)
}

// walk yields err and every error it wraps, depth first, following both
// Unwrap() error and Unwrap() []error (errors.Join).
func walk(err error) func(yield func(error) bool) {
	return func(yield func(error) bool) {
		var visit func(error) bool
		visit = func(e error) bool {
			if e == nil {
				return true
			}
			if !yield(e) {
				return false
			}
			switch u := e.(type) {
			case interface{ Unwrap() error }:
				return visit(u.Unwrap())
			case interface{ Unwrap() []error }:
				for _, c := range u.Unwrap() {
					if !visit(c) {
						return false
					}
				}
			}
			return true
		}
		visit(err)
	}
}
