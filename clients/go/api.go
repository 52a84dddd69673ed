package slct

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// States (README "A process's life").

// PutState creates a state and registers its selects; ErrExists if it exists.
func (c *Client) PutState(ctx context.Context, id string, body *StateBody, opts ...CallOption) (*State, error) {
	r, err := newCall(http.MethodPut, "/state/"+seg(id)).jsonBody(body)
	if err != nil {
		return nil, err
	}
	var s State
	return &s, c.into(ctx, r, &s, opts)
}

// UpdateState updates a leased state under its lease token and ends the lease:
// ErrLeaseLost if the lease is gone, ErrInvalidUpdate if a blocked select is missing
// or changed.
func (c *Client) UpdateState(ctx context.Context, id, token string, body *StateBody, opts ...CallOption) (*State, error) {
	r, err := newCall(http.MethodPut, "/state/"+seg(id)).jsonBody(body)
	if err != nil {
		return nil, err
	}
	r.lease = token
	var s State
	return &s, c.into(ctx, r, &s, opts)
}

// GetState reads a state (linearizable).
func (c *Client) GetState(ctx context.Context, id string) (*State, error) {
	var s State
	return &s, c.into(ctx, newCall(http.MethodGet, "/state/"+seg(id)), &s, nil)
}

// GetStateStale reads a state from the node asked, without a round to the leader.
func (c *Client) GetStateStale(ctx context.Context, id string) (*State, error) {
	var s State
	return &s, c.into(ctx, newCall(http.MethodGet, "/state/"+seg(id)).q("stale", true), &s, nil)
}

// DeleteState deletes a state; its blocked selects leave every queue.
func (c *Client) DeleteState(ctx context.Context, id string, opts ...CallOption) error {
	return c.into(ctx, newCall(http.MethodDelete, "/state/"+seg(id)), nil, opts)
}

// ListOptions filter GET /states; zero values leave the server's defaults.
type ListOptions struct {
	Prefix string
	// Status is waiting, pending, leased, done, failed, or paused.
	Status      string
	MinPriority *int
	Limit       int
	// After is the Next of the previous page.
	After string
	// Full includes data.
	Full  bool
	Stale bool
}

// ListStates is one page of states (summaries without data unless Full).
func (c *Client) ListStates(ctx context.Context, o ListOptions) (*StatePage, error) {
	r := newCall(http.MethodGet, "/states").q("prefix", o.Prefix)
	if o.Status != "" {
		r.q("status", o.Status)
	}
	if o.MinPriority != nil {
		r.q("min_priority", *o.MinPriority)
	}
	if o.Limit > 0 {
		r.q("limit", o.Limit)
	}
	if o.After != "" {
		r.q("after", o.After)
	}
	if o.Full {
		r.q("full", true)
	}
	if o.Stale {
		r.q("stale", true)
	}
	var p StatePage
	return &p, c.into(ctx, r, &p, nil)
}

// Resuming (README "Resuming by worker").

// PollOptions of Poll; zero values take the defaults in brackets.
type PollOptions struct {
	Prefix string
	// Wait is how long to wait for a state, in seconds [30]; -1 for no wait.
	Wait int
	// Limit is the most states to lease [1].
	Limit int
	// Lease is the lease length [30 s].
	Lease       time.Duration
	MinPriority *int
}

// Poll long-polls: leases and returns up to Limit pending states without a callback
// whose id starts with Prefix (none after Wait).
func (c *Client) Poll(ctx context.Context, o PollOptions) ([]State, error) {
	wait, limit, lease := o.Wait, o.Limit, o.Lease
	if wait == 0 {
		wait = 30
	} else if wait < 0 {
		wait = 0
	}
	if limit <= 0 {
		limit = 1
	}
	if lease <= 0 {
		lease = 30 * time.Second
	}
	r := newCall(http.MethodGet, "/state/poll").q("prefix", o.Prefix).q("wait", wait).
		q("limit", limit).q("lease_ms", millis(lease))
	if o.MinPriority != nil {
		r.q("min_priority", *o.MinPriority)
	}
	r.wait = time.Duration(wait) * time.Second
	var states []State
	return states, c.into(ctx, r, &states, nil)
}

// ExtendLease extends a lease to extend from now (a heartbeat).
func (c *Client) ExtendLease(ctx context.Context, id, token string, extend time.Duration) (*Lease, error) {
	r, err := newCall(http.MethodPost, "/state/"+seg(id)+"/lease").
		jsonBody(map[string]any{"token": token, "extend_ms": millis(extend)})
	if err != nil {
		return nil, err
	}
	r.kind = safe
	var l Lease
	return &l, c.into(ctx, r, &l, nil)
}

// ReleaseLease gives a leased state back: it is pending again.
func (c *Client) ReleaseLease(ctx context.Context, id, token string, opts ...CallOption) error {
	return c.into(ctx, newCall(http.MethodDelete, "/state/"+seg(id)+"/lease").q("token", token), nil, opts)
}

// Retry re-arms a failed state; ErrConflict if it has not failed.
func (c *Client) Retry(ctx context.Context, id string, opts ...CallOption) (*State, error) {
	var s State
	return &s, c.into(ctx, newCall(http.MethodPost, "/state/"+seg(id)+"/retry"), &s, opts)
}

// Process control (README "Process control").

// Pause pauses a state (idempotent): it is delivered to no one until resumed.
func (c *Client) Pause(ctx context.Context, id string) (*State, error) {
	r := newCall(http.MethodPost, "/state/"+seg(id)+"/pause")
	r.kind = safe
	var s State
	return &s, c.into(ctx, r, &s, nil)
}

// Resume resumes a paused state (idempotent).
func (c *Client) Resume(ctx context.Context, id string) (*State, error) {
	r := newCall(http.MethodPost, "/state/"+seg(id)+"/resume")
	r.kind = safe
	var s State
	return &s, c.into(ctx, r, &s, nil)
}

// History is a page of the state's events, newest first: at most limit (0: the
// server's default) numbered below before (0: the newest).
func (c *Client) History(ctx context.Context, id string, limit int, before uint64) (*History, error) {
	r := newCall(http.MethodGet, "/state/"+seg(id)+"/history")
	if limit > 0 {
		r.q("limit", limit)
	}
	if before > 0 {
		r.q("before", before)
	}
	var h History
	return &h, c.into(ctx, r, &h, nil)
}

// Channels (README "The API at a glance").

// MakeChan makes a channel with a buffer of capacity; the same again is fine,
// another capacity is ErrExists.
func (c *Client) MakeChan(ctx context.Context, name string, capacity uint64) (*Chan, error) {
	r, err := newCall(http.MethodPut, "/chan/"+seg(name)).jsonBody(map[string]uint64{"capacity": capacity})
	if err != nil {
		return nil, err
	}
	r.kind = safe
	var ch Chan
	return &ch, c.into(ctx, r, &ch, nil)
}

// GetChan is a channel's counts; ErrNotFound for an implicit channel holding nothing.
func (c *Client) GetChan(ctx context.Context, name string) (*Chan, error) {
	var ch Chan
	return &ch, c.into(ctx, newCall(http.MethodGet, "/chan/"+seg(name)), &ch, nil)
}

// Detached is Send's wait for a durable send that waits for no one.
const Detached = -1

// Send sends v (marshalled to JSON) on a channel and returns "sent" or "parked".
// wait Detached: a durable send, parked until a receiver takes it; 0: ErrWouldBlock
// unless it completes now; N: blocks up to N seconds, then ErrTimeout. A closed
// channel is ErrClosed.
func (c *Client) Send(ctx context.Context, name string, v any, wait int, opts ...CallOption) (string, error) {
	r, err := newCall(http.MethodPost, "/chan/"+seg(name)+"/send").jsonBody(v)
	if err != nil {
		return "", err
	}
	if wait >= 0 {
		r.q("wait", wait)
		r.wait = time.Duration(wait) * time.Second
	}
	var answer struct {
		Status string `json:"status"`
	}
	return answer.Status, c.into(ctx, r, &answer, opts)
}

// Recv receives, blocking up to wait seconds (ErrTimeout after; 0 is a try-receive,
// ErrWouldBlock). A value matched to a request whose answer is lost is lost: receive
// through states when that matters.
func (c *Client) Recv(ctx context.Context, name string, wait int) (*Received, error) {
	r := newCall(http.MethodPost, "/chan/"+seg(name)+"/recv").q("wait", wait)
	r.wait = time.Duration(wait) * time.Second
	var got Received
	return &got, c.into(ctx, r, &got, nil)
}

// CloseChan closes a channel (ErrClosed if it is closed) and returns the answer,
// which lists the parked detached sends the close discarded.
func (c *Client) CloseChan(ctx context.Context, name string, opts ...CallOption) (json.RawMessage, error) {
	var answer json.RawMessage
	return answer, c.into(ctx, newCall(http.MethodPost, "/chan/"+seg(name)+"/close"), &answer, opts)
}

// ListChans is one page of stored channels.
func (c *Client) ListChans(ctx context.Context, prefix string, limit int, after string) (*ChanPage, error) {
	r := newCall(http.MethodGet, "/chans").q("prefix", prefix)
	if limit > 0 {
		r.q("limit", limit)
	}
	if after != "" {
		r.q("after", after)
	}
	var p ChanPage
	return &p, c.into(ctx, r, &p, nil)
}

// Cluster and operations (README "Running a cluster").

// Cluster is the cluster as a node sees it (leader: as the leader sees it).
func (c *Client) Cluster(ctx context.Context, leader bool) (*ClusterInfo, error) {
	r := newCall(http.MethodGet, "/cluster")
	if leader {
		r.q("leader", true)
	}
	var info ClusterInfo
	return &info, c.into(ctx, r, &info, nil)
}

// AddLearner adds a learner (admin token).
func (c *Client) AddLearner(ctx context.Context, id uint64, addr string) (*ClusterInfo, error) {
	r, err := newCall(http.MethodPost, "/cluster/learners").jsonBody(map[string]any{"id": id, "addr": addr})
	if err != nil {
		return nil, err
	}
	r.kind = safe
	var info ClusterInfo
	return &info, c.into(ctx, r, &info, nil)
}

// RemoveLearner removes a learner (admin token).
func (c *Client) RemoveLearner(ctx context.Context, id uint64) (*ClusterInfo, error) {
	var info ClusterInfo
	return &info, c.into(ctx, newCall(http.MethodDelete, fmt.Sprintf("/cluster/learners/%d", id)), &info, nil)
}

// ChangeMembership sets the voters (admin token); fewer than three only with force.
func (c *Client) ChangeMembership(ctx context.Context, members []uint64, force bool) (*ClusterInfo, error) {
	r, err := newCall(http.MethodPost, "/cluster/membership").jsonBody(map[string]any{"members": members})
	if err != nil {
		return nil, err
	}
	if force {
		r.q("force", true)
	}
	r.kind = safe
	var info ClusterInfo
	return &info, c.into(ctx, r, &info, nil)
}

// Health is GET /healthz on one node (url; "" for the first): nil if it is up.
func (c *Client) Health(ctx context.Context, url string) error {
	r := newCall(http.MethodGet, "/healthz")
	r.kind, r.node = once, url
	return c.into(ctx, r, nil, nil)
}

// Ready is GET /readyz on one node: nil if it is ready, else ErrNotReady.
func (c *Client) Ready(ctx context.Context, url string) error {
	r := newCall(http.MethodGet, "/readyz")
	r.kind, r.node = once, url
	return c.into(ctx, r, nil, nil)
}

// Metrics is GET /metrics of one node, as text.
func (c *Client) Metrics(ctx context.Context, url string) (string, error) {
	r := newCall(http.MethodGet, "/metrics")
	r.kind, r.node = once, url
	raw, err := c.do(ctx, r, nil)
	return string(raw), err
}

func millis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return ms
}
