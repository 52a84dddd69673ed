package slct

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Status values of a state (README "Statuses").
const (
	Waiting = "waiting"
	Pending = "pending"
	Leased  = "leased"
	Done    = "done"
	Failed  = "failed"
)

// Case is one case of a select: recv {Chan}, send {Chan, Data}, timer {At | AfterMs},
// or default. Build one with Recv, Send, TimerAt, TimerAfter or Default.
type Case struct {
	Op   string `json:"op"`
	Chan string `json:"chan,omitempty"`
	// Data is a send's value, as its exact JSON text: the server compares a
	// still-blocked select's cases with the blocked ones byte for byte.
	Data json.RawMessage `json:"data,omitempty"`
	// At is a timer's deadline (Unix ms, log time); the server fills it in for a
	// relative timer.
	At *int64 `json:"at,omitempty"`
	// AfterMs is a relative timer's delay, as written.
	AfterMs *int64 `json:"after_ms,omitempty"`
}

// Recv is a receive from ch.
func Recv(ch string) Case { return Case{Op: "recv", Chan: ch} }

// Send is a send of v (marshalled to JSON; it panics if v cannot be) on ch.
func Send(ch string, v any) Case { return Case{Op: "send", Chan: ch, Data: mustJSON(v)} }

// TimerAt fires at atMs (Unix ms, log time).
func TimerAt(atMs int64) Case { return Case{Op: "timer", At: &atMs} }

// TimerAfter fires ms after the select is registered.
func TimerAfter(ms int64) Case { return Case{Op: "timer", AfterMs: &ms} }

// Default completes the select at once if no other case is ready.
func Default() Case { return Case{Op: "default"} }

// Select is one blocked goroutine of a state.
type Select struct {
	ID    string `json:"id"`
	Cases []Case `json:"cases"`
}

// NewSelect is a select named id within its state.
func NewSelect(id string, cases ...Case) Select { return Select{ID: id, Cases: cases} }

// Result is what a completed select produced.
type Result struct {
	Seq    uint64          `json:"seq"`
	Select string          `json:"select"`
	Case   int             `json:"case"`
	Op     string          `json:"op"`
	Chan   string          `json:"chan,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	At     int64           `json:"at"`
}

// Callback is where the leader POSTs the state when it turns pending.
type Callback struct {
	URL       string `json:"url"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
}

// Lease is the lease on a state handed to a poller or a callback.
type Lease struct {
	Token     string `json:"token"`
	ExpiresAt int64  `json:"expires_at"`
	GrantedAt int64  `json:"granted_at,omitempty"`
}

// State is one process.
type State struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// Data is the process's data as JSON text; absent in listing summaries.
	Data      json.RawMessage `json:"data,omitempty"`
	Selects   []Select        `json:"selects"`
	Results   []Result        `json:"results"`
	Callback  *Callback       `json:"callback,omitempty"`
	Version   uint64          `json:"version"`
	Lease     *Lease          `json:"lease,omitempty"`
	CreatedAt int64           `json:"created_at"`
	UpdatedAt int64           `json:"updated_at"`
	Attempts  int             `json:"attempts,omitempty"`
	LastError string          `json:"last_error,omitempty"`
	Paused    bool            `json:"paused,omitempty"`
	Priority  int             `json:"priority"`
}

// StatePage is one page of GET /states.
type StatePage struct {
	States []State `json:"states"`
	Next   *string `json:"next"`
}

// Event is one event of a state's history; Fields holds the whole event.
type Event struct {
	Seq    uint64                     `json:"seq"`
	At     int64                      `json:"at"`
	Index  uint64                     `json:"index"`
	Event  string                     `json:"event"`
	Fields map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps every field of the event in Fields.
func (e *Event) UnmarshalJSON(b []byte) error {
	type plain Event
	if err := json.Unmarshal(b, (*plain)(e)); err != nil {
		return err
	}
	return json.Unmarshal(b, &e.Fields)
}

// History is a page of a state's events, newest first.
type History struct {
	Events []Event `json:"events"`
	Next   *uint64 `json:"next"`
}

// Chan is a channel's counts.
type Chan struct {
	Name      string `json:"name"`
	Capacity  uint64 `json:"capacity"`
	Len       uint64 `json:"len"`
	Closed    bool   `json:"closed"`
	Senders   uint64 `json:"senders"`
	Receivers uint64 `json:"receivers"`
}

// ChanPage is one page of GET /chans.
type ChanPage struct {
	Chans []Chan  `json:"chans"`
	Next  *string `json:"next"`
}

// Received is what a receive got: the value, and false once the channel is closed
// and drained.
type Received struct {
	Data json.RawMessage `json:"data"`
	OK   bool            `json:"ok"`
}

// ClusterInfo is a node's view of the cluster.
type ClusterInfo struct {
	ID           uint64             `json:"id"`
	Leader       *uint64            `json:"leader"`
	Term         uint64             `json:"term"`
	Members      map[string]string  `json:"members"`
	Learners     map[string]string  `json:"learners"`
	LastLogIndex *uint64            `json:"last_log_index"`
	LastApplied  *uint64            `json:"last_applied"`
	State        string             `json:"state"`
	Replication  map[string]*uint64 `json:"replication,omitempty"`
}

// StateBody is the body of PUT /state/{id}: a new state, or an update under a lease.
// Build it with Body and its setters. In an update, what is not set keeps its value
// on the server; ClearCallback and Data(nil) clear. Selects still blocked on the
// server must be sent back unchanged (take them from the leased State.Selects).
type StateBody struct {
	data        json.RawMessage
	selects     []Select
	hasSelects  bool
	callback    *Callback
	hasCallback bool
	priority    *int
	err         error
}

// Body is an empty body: as a create, a done state; as an update, it consumes the
// results and changes nothing else.
func Body() *StateBody { return &StateBody{} }

// Data sets the data to v marshalled to JSON (nil: JSON null, which clears it).
func (b *StateBody) Data(v any) *StateBody {
	raw, err := json.Marshal(v)
	if err != nil {
		b.err = fmt.Errorf("slct: the data cannot be JSON: %w", err)
	}
	b.data = raw
	return b
}

// RawData sets the data to JSON text as it is.
func (b *StateBody) RawData(raw json.RawMessage) *StateBody {
	if !json.Valid(raw) {
		b.err = fmt.Errorf("slct: the data is not JSON: %q", raw)
	}
	b.data = raw
	return b
}

// Select adds a select (and sends the list, so an update registers it).
func (b *StateBody) Select(s Select) *StateBody {
	b.selects = append(b.selects, s)
	b.hasSelects = true
	return b
}

// Selects sets the whole list; none at all finishes the process (once no results
// are left).
func (b *StateBody) Selects(s ...Select) *StateBody {
	b.selects = append([]Select{}, s...)
	b.hasSelects = true
	return b
}

// Callback sets the callback (timeoutMs 0: the server's default).
func (b *StateBody) Callback(url string, timeoutMs int64) *StateBody {
	b.callback = &Callback{URL: url, TimeoutMs: timeoutMs}
	b.hasCallback = true
	return b
}

// ClearCallback removes the callback.
func (b *StateBody) ClearCallback() *StateBody {
	b.callback = nil
	b.hasCallback = true
	return b
}

// Priority sets the priority (0-9).
func (b *StateBody) Priority(p int) *StateBody {
	b.priority = &p
	return b
}

// MarshalJSON writes the body with send values and data as their exact text
// (encoding/json would compact them).
func (b *StateBody) MarshalJSON() ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	var w bytes.Buffer
	w.WriteByte('{')
	field := func(name string) {
		if w.Len() > 1 {
			w.WriteByte(',')
		}
		w.WriteString(strconv.Quote(name))
		w.WriteByte(':')
	}
	if b.data != nil {
		field("data")
		w.Write(b.data)
	}
	if b.hasSelects {
		field("selects")
		w.WriteByte('[')
		for i, s := range b.selects {
			if i > 0 {
				w.WriteByte(',')
			}
			writeSelect(&w, s)
		}
		w.WriteByte(']')
	}
	if b.hasCallback {
		field("callback")
		if b.callback == nil {
			w.WriteString("null")
		} else {
			raw, _ := json.Marshal(b.callback)
			w.Write(raw)
		}
	}
	if b.priority != nil {
		field("priority")
		w.WriteString(strconv.Itoa(*b.priority))
	}
	w.WriteByte('}')
	return w.Bytes(), nil
}

func writeSelect(w *bytes.Buffer, s Select) {
	id, _ := json.Marshal(s.ID)
	w.WriteString(`{"id":`)
	w.Write(id)
	w.WriteString(`,"cases":[`)
	for i, c := range s.Cases {
		if i > 0 {
			w.WriteByte(',')
		}
		op, _ := json.Marshal(c.Op)
		w.WriteString(`{"op":`)
		w.Write(op)
		if c.Chan != "" {
			ch, _ := json.Marshal(c.Chan)
			w.WriteString(`,"chan":`)
			w.Write(ch)
		}
		if c.Data != nil {
			w.WriteString(`,"data":`)
			w.Write(c.Data)
		}
		// The server shows a relative timer with both fields but takes one; the
		// deadline matches the blocked select.
		if c.At != nil {
			w.WriteString(`,"at":`)
			w.WriteString(strconv.FormatInt(*c.At, 10))
		} else if c.AfterMs != nil {
			w.WriteString(`,"after_ms":`)
			w.WriteString(strconv.FormatInt(*c.AfterMs, 10))
		}
		w.WriteByte('}')
	}
	w.WriteString("]}")
}

func mustJSON(v any) json.RawMessage {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("slct: a value that cannot be JSON: %v", err))
	}
	return raw
}
