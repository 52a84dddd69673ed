package slct

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ErrBadSignature is a callback whose Slct-Signature or Slct-Timestamp does not
// check out.
var ErrBadSignature = errors.New("slct: bad callback signature")

// Sign is the Slct-Signature value for body sent at timestampMs:
// sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">.
func Sign(secret string, body []byte, timestampMs int64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestampMs, 10) + "."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a callback signed with the node's --callback-secret: signature (the
// Slct-Signature header) must sign body (the raw bytes) at timestamp (the
// Slct-Timestamp header, Unix ms), compared in constant time, and the timestamp must
// be within maxAge of now, so a captured request cannot be replayed later. The error
// wraps ErrBadSignature.
func Verify(secret string, body []byte, timestamp, signature string, maxAge time.Duration, now time.Time) error {
	if timestamp == "" || signature == "" {
		return fmt.Errorf("%w: Slct-Timestamp and Slct-Signature are required", ErrBadSignature)
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: Slct-Timestamp is not a number of milliseconds", ErrBadSignature)
	}
	age := now.Sub(time.UnixMilli(ts))
	if age > maxAge || age < -maxAge {
		return fmt.Errorf("%w: Slct-Timestamp is %v away from now", ErrBadSignature, age)
	}
	if !hmac.Equal([]byte(Sign(secret, body, ts)), []byte(signature)) {
		return fmt.Errorf("%w: Slct-Signature does not match the body", ErrBadSignature)
	}
	return nil
}

// Delivery is what comes with a callback besides the state.
type Delivery struct {
	// StateID is Slct-State-Id.
	StateID string
	// Lease is Slct-Lease: the token to PUT the update with, for a handler that
	// answers later.
	Lease string
	// Attempt is Slct-Attempt, from 1.
	Attempt int
	// IdempotencyKey is "{id}:{version}": the same for every attempt of one delivery.
	IdempotencyKey string
}

// CallbackFunc resumes a state delivered by callback. Its update is the answer, which
// the node applies under the callback's lease; a nil update answers 204, and the
// receiver PUTs the update itself with Delivery.Lease within the lease. An error
// answers 500, which the node retries with backoff.
type CallbackFunc func(ctx context.Context, s *State, d Delivery) (*StateBody, error)

// CallbackHandler is an http.Handler for callback POSTs. With a secret (the node's
// --callback-secret) a request without a valid signature at most MaxAge old is 401
// and never reaches the function.
type CallbackHandler struct {
	Secret string
	// MaxAge is how old (or far ahead) a signed timestamp may be [5 min].
	MaxAge time.Duration
	// MaxBody is the largest body read [8 MiB].
	MaxBody int64
	Func    CallbackFunc
}

// NewCallbackHandler is a CallbackHandler with the defaults.
func NewCallbackHandler(secret string, f CallbackFunc) *CallbackHandler {
	return &CallbackHandler{Secret: secret, Func: f}
}

func (h *CallbackHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		answer(w, http.StatusMethodNotAllowed, "method_not_allowed", "callbacks are POSTs")
		return
	}
	limit, maxAge := h.MaxBody, h.MaxAge
	if limit <= 0 {
		limit = 8 << 20
	}
	if maxAge <= 0 {
		maxAge = 5 * time.Minute
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit))
	if err != nil {
		answer(w, http.StatusBadRequest, "invalid", "the body could not be read")
		return
	}
	if h.Secret != "" {
		err := Verify(h.Secret, body, r.Header.Get("Slct-Timestamp"), r.Header.Get("Slct-Signature"), maxAge, time.Now())
		if err != nil {
			answer(w, http.StatusUnauthorized, "unauthorized", err.Error())
			return
		}
	}
	var state State
	if err := json.Unmarshal(body, &state); err != nil {
		answer(w, http.StatusBadRequest, "invalid_json", "the body is not a state")
		return
	}
	attempt, _ := strconv.Atoi(r.Header.Get("Slct-Attempt"))
	d := Delivery{
		StateID: r.Header.Get("Slct-State-Id"), Lease: r.Header.Get("Slct-Lease"),
		Attempt: attempt, IdempotencyKey: r.Header.Get("Idempotency-Key"),
	}
	update, err := h.Func(r.Context(), &state, d)
	if err != nil {
		answer(w, http.StatusInternalServerError, "internal", "the handler failed")
		return
	}
	if update == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	raw, err := update.MarshalJSON()
	if err != nil {
		answer(w, http.StatusInternalServerError, "internal", "the update cannot be JSON")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}

func answer(w http.ResponseWriter, status int, code, message string) {
	raw, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}
