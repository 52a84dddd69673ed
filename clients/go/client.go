// Package slct is the Go client of slct, Go's channels and select as a durable,
// replicated HTTP service: the whole HTTP API against several nodes with failover,
// one error sentinel per error code, a Worker that resumes processes by long-polling,
// and a handler for callbacks that checks their signature. Standard library only.
//
// # Nodes, failover and retries
//
// Every node serves the whole API and forwards to the leader, so any node will do;
// the client is given several so that it survives the loss of one. It sends each
// request to the node that answered last and moves on to the next when a request
//
//   - cannot connect (it reached no node, so it changed nothing), or
//   - is answered 503 with a code that says nothing was applied (no_leader,
//     not_leader, no_quorum, not_ready, clock_jump).
//
// Reads (long-polls included: a state a lost poll leased is redelivered when its
// lease lapses), idempotent writes (pause, resume, a lease extension, making a
// channel, membership changes) and writes sent WithIdempotencyKey are also retried on
// every other 503 (leader_unreachable, outcome_unknown, ...) and when the answer was
// lost after the request was sent. Other writes that fail that way may have been
// applied, so they are not retried: the caller gets the error (OutcomeUnknown(err) is
// true) and decides.
//
// A node that answered 503 is not asked again before its Retry-After (at most
// Options.MaxWait); one that refused the connection, not for a second. Each node is
// tried at most Options.Attempts times per request.
package slct

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options of a Client; the zero value is the defaults.
type Options struct {
	// Token is sent as Authorization: Bearer (the node's --token, or the admin token
	// for membership changes).
	Token string
	// Attempts is the tries per node for one request (default 5).
	Attempts int
	// MaxWait is the longest pause before asking a node again (default 2 s).
	MaxWait time.Duration
	// Timeout is how long one request may take beyond the wait it asks for (default
	// 30 s).
	Timeout time.Duration
	// Transport sends the requests (default: one like http.DefaultTransport).
	Transport http.RoundTripper
}

// Client is a client of one slct cluster through any of its nodes; safe for
// concurrent use.
type Client struct {
	nodes    []*node
	token    string
	attempts int
	maxWait  time.Duration
	timeout  time.Duration
	http     *http.Client

	mu      sync.Mutex
	current int
}

type node struct {
	url       string
	notBefore time.Time // guarded by Client.mu
}

// How a request may be repeated (see the package docs).
type kind int

const (
	unsafe kind = iota // only when nothing was applied
	safe               // on any 503 and on a lost answer
	once               // never: the caller asked one node
)

// ParseURLs splits a comma-separated list of node URLs (as in SLCT_SERVER).
func ParseURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// New is a client of the nodes at urls (http:// or https://).
func New(urls []string, opts *Options) (*Client, error) {
	if opts == nil {
		opts = &Options{}
	}
	if len(urls) == 0 {
		return nil, errors.New("slct: a client needs at least one node URL")
	}
	c := &Client{token: opts.Token, attempts: opts.Attempts, maxWait: opts.MaxWait, timeout: opts.Timeout}
	for _, u := range urls {
		parsed, err := url.Parse(u)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return nil, fmt.Errorf("slct: server %q must be an http:// or https:// URL", u)
		}
		c.nodes = append(c.nodes, &node{url: strings.TrimRight(u, "/")})
	}
	if c.attempts <= 0 {
		c.attempts = 5
	}
	if c.maxWait <= 0 {
		c.maxWait = 2 * time.Second
	}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	transport := opts.Transport
	if transport == nil {
		transport = defaultTransport()
	}
	c.http = &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	return c, nil
}

// dialError marks a failure to connect: the request reached no node.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func defaultTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		return conn, nil
	}
	t.MaxIdleConnsPerHost = 64
	// Below the server's idle timeout (60 s by default): a connection the server is
	// closing must not be picked for a write, whose failure then could not be told
	// from one the server received.
	t.IdleConnTimeout = 30 * time.Second
	return t
}

// URLs are the nodes' URLs, in the order given.
func (c *Client) URLs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.url
	}
	return out
}

// CallOption adds to one request.
type CallOption func(*call)

// WithIdempotencyKey sends Idempotency-Key: key, and lets the client repeat the write
// when its outcome is unknown (the server answers a repeat with the first reply).
func WithIdempotencyKey(key string) CallOption {
	return func(c *call) { c.key = key }
}

type call struct {
	method string
	path   string
	query  url.Values
	body   []byte
	lease  string
	key    string
	kind   kind
	wait   time.Duration
	node   string
}

func newCall(method, path string) *call {
	k := unsafe
	if method == http.MethodGet {
		k = safe
	}
	return &call{method: method, path: path, query: url.Values{}, kind: k}
}

func (r *call) q(key string, value any) *call {
	r.query.Set(key, fmt.Sprint(value))
	return r
}

func (r *call) jsonBody(v any) (*call, error) {
	var raw []byte
	var err error
	if m, ok := v.(json.Marshaler); ok {
		raw, err = m.MarshalJSON()
	} else {
		raw, err = json.Marshal(v)
	}
	if err != nil {
		return nil, fmt.Errorf("slct: the body cannot be JSON: %w", err)
	}
	r.body = raw
	return r, nil
}

func seg(name string) string { return url.PathEscape(name) }

// mayRetry says whether a request of kind k that failed with err may be sent again
// (to this node or another): the rules of the package docs.
func mayRetry(k kind, err error, key string) bool {
	var tr *TransportError
	var api *Error
	switch {
	case errors.As(err, &tr):
		if !tr.Connected {
			return true
		}
	case errors.As(err, &api):
		if api.Status != 503 {
			return false
		}
		if api.NothingApplied() {
			return k != once
		}
	default:
		return false
	}
	return k == safe || (k == unsafe && key != "")
}

// do sends the call, failing over and retrying as the package docs say, and returns
// the body of a 2xx.
func (c *Client) do(ctx context.Context, r *call, opts []CallOption) ([]byte, error) {
	for _, o := range opts {
		o(r)
	}
	if r.node != "" || r.kind == once {
		target := c.nodes[0]
		if r.node != "" {
			target = nil
			for _, n := range c.nodes {
				if n.url == strings.TrimRight(r.node, "/") {
					target = n
				}
			}
			if target == nil {
				return nil, fmt.Errorf("slct: %q is not one of this client's nodes", r.node)
			}
		}
		return c.once(ctx, target, r)
	}
	c.mu.Lock()
	start := c.current
	c.mu.Unlock()
	tries := c.attempts * len(c.nodes)
	for attempt := 0; ; attempt++ {
		index := (start + attempt) % len(c.nodes)
		target := c.nodes[index]
		c.mu.Lock()
		pause := time.Until(target.notBefore)
		c.mu.Unlock()
		if pause > c.maxWait {
			pause = c.maxWait
		}
		if pause > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pause):
			}
		}
		body, err := c.once(ctx, target, r)
		if err == nil {
			c.mu.Lock()
			c.current = index
			c.mu.Unlock()
			return body, nil
		}
		if attempt+1 >= tries || ctx.Err() != nil || !mayRetry(r.kind, err, r.key) {
			return nil, err
		}
		after := time.Second
		var api *Error
		if errors.As(err, &api) && api.RetryAfter > 0 {
			after = api.RetryAfter
		}
		c.mu.Lock()
		target.notBefore = time.Now().Add(after)
		if c.current == index {
			c.current = (index + 1) % len(c.nodes)
		}
		c.mu.Unlock()
	}
}

// once is one try against one node.
func (c *Client) once(ctx context.Context, n *node, r *call) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+r.wait)
	defer cancel()
	target := n.url + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("slct: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if r.lease != "" {
		req.Header.Set("Slct-Lease", r.lease)
	}
	if r.key != "" {
		req.Header.Set("Idempotency-Key", r.key)
	}
	answer, err := c.http.Do(req)
	if err != nil {
		var dial *dialError
		return nil, &TransportError{URL: n.url, Connected: !errors.As(err, &dial), Err: err}
	}
	defer answer.Body.Close()
	raw, err := io.ReadAll(answer.Body)
	if err != nil {
		return nil, &TransportError{URL: n.url, Connected: true, Err: err}
	}
	if answer.StatusCode >= 200 && answer.StatusCode < 300 {
		return raw, nil
	}
	e := &Error{Status: answer.StatusCode, Message: string(raw)}
	if secs, err := strconv.Atoi(strings.TrimSpace(answer.Header.Get("Retry-After"))); err == nil {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	var parsed struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &parsed) == nil && parsed.Error.Code != "" {
		e.Code, e.Message = parsed.Error.Code, parsed.Error.Message
	}
	return nil, e
}

// into sends the call and decodes the answer into out (nil: ignore it).
func (c *Client) into(ctx context.Context, r *call, out any, opts []CallOption) error {
	raw, err := c.do(ctx, r, opts)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("slct: %s %s: unexpected answer: %w", r.method, r.path, err)
	}
	return nil
}
