package slct

import (
	"errors"
	"fmt"
	"time"
)

// Error is an error answer from a node: its HTTP status and the body's code and
// message. Compare with the sentinel of its code:
//
//	if errors.Is(err, slct.ErrLeaseLost) { ... }
//
// A sentinel matches every *Error with the same code, whatever its message.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the body's code (lease_lost, no_leader, ...); empty if it had none.
	Code string
	// Message is the server's sentence (or the body, if it was not an error body).
	Message string
	// RetryAfter is the server's Retry-After (0 if absent).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return "slct: " + e.Code
	}
	return fmt.Sprintf("slct: %s (%d %s)", e.Message, e.Status, e.Code)
}

// Is matches a sentinel of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == 0 && t.Code == e.Code
}

// NothingApplied says whether this is a 503 whose code guarantees the request
// changed nothing, so it may be sent again whatever it was.
func (e *Error) NothingApplied() bool {
	return e.Status == 503 && nothingApplied[e.Code]
}

func sentinel(code string) *Error { return &Error{Code: code} }

// One sentinel per error code of the API (openapi.yaml).
var (
	// 400: an invalid field, path or query value.
	ErrInvalid = sentinel("invalid")
	// 400: the body is not JSON.
	ErrInvalidJSON = sentinel("invalid_json")
	// 400: JSON nested deeper than the node allows.
	ErrTooDeep = sentinel("too_deep")
	// 401: no token, or not one the node knows.
	ErrUnauthorized = sentinel("unauthorized")
	// 403: this token may not do this (membership needs the admin token).
	ErrForbidden = sentinel("forbidden")
	// 404: no such state, channel or member.
	ErrNotFound = sentinel("not_found")
	// 405: no such method on this route.
	ErrMethodNotAllowed = sentinel("method_not_allowed")
	// 408: a blocking send or receive found no partner and was withdrawn.
	ErrTimeout = sentinel("timeout")
	// 409: the state exists, or the channel exists with another capacity.
	ErrExists = sentinel("exists")
	// 409: the lease expired or is not the current one; nothing changed.
	ErrLeaseLost = sentinel("lease_lost")
	// 409: the channel is closed.
	ErrClosed = sentinel("closed")
	// 409: a try-send or try-receive could not complete now.
	ErrWouldBlock = sentinel("would_block")
	// 409: another conflict (a retry of a state that has not failed, ...).
	ErrConflict = sentinel("conflict")
	// 413: the body, or the command it makes, is too large.
	ErrTooLarge = sentinel("too_large")
	// 422: an update that drops or changes a blocked select.
	ErrInvalidUpdate = sentinel("invalid_update")
	// 422: the callback url is outside --callback-allow.
	ErrCallbackNotAllowed = sentinel("callback_not_allowed")
	// 422: the idempotency key was used with another request.
	ErrIdempotencyKeyReused = sentinel("idempotency_key_reused")
	// 429: the channel or node has all the parked HTTP operations it may.
	ErrTooManyWaiters = sentinel("too_many_waiters")
	// 500: a bug in the node.
	ErrInternal = sentinel("internal")
	// 503: no leader is known; nothing was applied.
	ErrNoLeader = sentinel("no_leader")
	// 503: the node asked is not the leader; nothing was applied.
	ErrNotLeader = sentinel("not_leader")
	// 503: the node could not forward to the leader or lost its answer; a write may
	// have been applied.
	ErrLeaderUnreachable = sentinel("leader_unreachable")
	// 503: a linearizable read could not reach a quorum.
	ErrNoQuorum = sentinel("no_quorum")
	// 503: the node is not ready.
	ErrNotReady = sentinel("not_ready")
	// 503: the node is stopping.
	ErrShuttingDown = sentinel("shutting_down")
	// 503: the node's storage failed.
	ErrStorage = sentinel("storage")
	// 503: the cluster cannot answer now.
	ErrUnavailable = sentinel("unavailable")
	// 503: a write not confirmed in time; it may or may not have been applied.
	ErrOutcomeUnknown = sentinel("outcome_unknown")
	// 503: the leader's clock is far ahead of log time; nothing was applied.
	ErrClockJump = sentinel("clock_jump")
	// 507: a voter's disk is below its free-space reserve; the write was refused
	// before it was proposed, so it was not applied.
	ErrDiskFull = sentinel("disk_full")
)

// Codes of a 503 that guarantee the request was not applied.
var nothingApplied = map[string]bool{
	"no_leader": true, "not_leader": true, "no_quorum": true, "not_ready": true, "clock_jump": true,
}

// TransportError is a request that could not be sent or whose answer could not be
// read.
type TransportError struct {
	// URL is the node's.
	URL string
	// Connected is false when no connection was made: the request reached no node
	// and changed nothing. When true, a write may have been applied.
	Connected bool
	// Err is the cause.
	Err error
}

func (e *TransportError) Error() string {
	if !e.Connected {
		return fmt.Sprintf("slct: %s: cannot connect: %v", e.URL, e.Err)
	}
	return fmt.Sprintf("slct: %s: %v", e.URL, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// OutcomeUnknown says whether a write that failed with err may nevertheless have
// been applied: a 503 other than those that say nothing was applied, or a request
// whose answer was lost after it was sent. Read the state before repeating a write
// that is not idempotent.
func OutcomeUnknown(err error) bool {
	var api *Error
	if errors.As(err, &api) {
		return api.Status == 503 && !api.NothingApplied()
	}
	var tr *TransportError
	return errors.As(err, &tr) && tr.Connected
}

// StatusOf is the HTTP status of an error answer, or 0.
func StatusOf(err error) int {
	var api *Error
	if errors.As(err, &api) {
		return api.Status
	}
	return 0
}
