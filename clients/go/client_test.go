package slct

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestAProcessLifeCreatePayPollUpdateDone(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	id := unique("order/go")
	ch := "payments/" + id
	s, err := c.PutState(cx, id, Body().Data(map[string]string{"step": "awaiting"}).
		Select(NewSelect("main", Recv(ch), TimerAfter(60000))))
	if err != nil || s.Status != Waiting || string(s.Data) != `{"step":"awaiting"}` {
		t.Fatalf("create: %+v %v", s, err)
	}
	if _, err := c.PutState(cx, id, Body()); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if sent, err := c.Send(cx, ch, map[string]int{"amount": 42}, Detached); err != nil || sent != "sent" {
		t.Fatalf("send: %q %v", sent, err)
	}
	leased, err := c.Poll(cx, PollOptions{Prefix: id, Wait: 5})
	if err != nil || len(leased) != 1 || leased[0].Status != Leased {
		t.Fatalf("poll: %+v %v", leased, err)
	}
	if string(leased[0].Results[0].Data) != `{"amount":42}` {
		t.Fatalf("result: %s", leased[0].Results[0].Data)
	}
	token := leased[0].Lease.Token
	if _, err := c.ExtendLease(cx, id, token, 20e9); err != nil {
		t.Fatal(err)
	}
	done, err := c.UpdateState(cx, id, token, Body().Data("paid").Selects())
	if err != nil || done.Status != Done {
		t.Fatalf("update: %+v %v", done, err)
	}
	if _, err := c.UpdateState(cx, id, token, Body()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("update again: %v", err)
	}
	if s, err := c.GetStateStale(cx, id); err != nil || string(s.Data) != `"paid"` {
		t.Fatalf("stale read: %+v %v", s, err)
	}
	h, err := c.History(cx, id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, e := range h.Events {
		events = append(events, e.Event)
	}
	if !strings.Contains(strings.Join(events, ","), "leased") || h.Events[0].Fields["event"] == nil {
		t.Fatalf("history: %v", events)
	}
	if err := c.DeleteState(cx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetState(cx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read after delete: %v", err)
	}
}

func TestAnUpdateSendsBackBlockedSelectsByteForByte(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	id := unique("keep")
	// A value written with spaces and an exponent, as another client might.
	value := json.RawMessage(`{"b": 1, "a": 1e15, "s": "été <&>"}`)
	_, err := c.PutState(cx, id, Body().
		Select(NewSelect("go", Recv(id+"/go"))).
		Select(NewSelect("out", Case{Op: "send", Chan: id + "/out", Data: value}, TimerAfter(600000))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(cx, id+"/go", true, Detached); err != nil {
		t.Fatal(err)
	}
	leased, err := c.Poll(cx, PollOptions{Prefix: id, Wait: 5})
	if err != nil || len(leased) != 1 {
		t.Fatalf("poll: %v %v", leased, err)
	}
	blocked := leased[0].Selects
	if len(blocked) != 1 || blocked[0].Cases[1].At == nil {
		t.Fatalf("blocked: %+v", blocked)
	}
	token := leased[0].Lease.Token
	if _, err := c.UpdateState(cx, id, token, Body().Selects()); !errors.Is(err, ErrInvalidUpdate) {
		t.Fatalf("dropping a blocked select: %v", err)
	}
	updated, err := c.UpdateState(cx, id, token, Body().Selects(append(blocked, NewSelect("next", Recv(id+"/next")))...))
	if err != nil || len(updated.Selects) != 2 {
		t.Fatalf("update: %+v %v", updated, err)
	}
	got, err := c.Recv(cx, id+"/out", 5)
	if err != nil || string(got.Data) != string(value) || !got.OK {
		t.Fatalf("recv: %s %v", got.Data, err)
	}
}

func TestListingPagesAndFilters(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	prefix := unique("list") + "/"
	for i := 0; i < 5; i++ {
		_, err := c.PutState(cx, fmt.Sprint(prefix, i), Body().Priority(i%2).Select(NewSelect("g", Recv(prefix+"never"))))
		if err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	after := ""
	for {
		page, err := c.ListStates(cx, ListOptions{Prefix: prefix, Limit: 2, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.States {
			ids = append(ids, s.ID)
			if s.Data != nil {
				t.Fatalf("a summary with data: %s", s.Data)
			}
		}
		if page.Next == nil {
			break
		}
		after = *page.Next
	}
	if len(ids) != 5 || ids[0] != prefix+"0" {
		t.Fatalf("ids: %v", ids)
	}
	one := 1
	page, err := c.ListStates(cx, ListOptions{Prefix: prefix, MinPriority: &one, Status: Waiting})
	if err != nil || len(page.States) != 2 {
		t.Fatalf("filtered: %+v %v", page, err)
	}
}

func TestPauseResumePriorityAndRetry(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	id := unique("ctl")
	if _, err := c.PutState(cx, id, Body().Priority(3).Select(NewSelect("g", Default()))); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if s, err := c.Pause(cx, id); err != nil || !s.Paused {
			t.Fatalf("pause: %+v %v", s, err)
		}
	}
	if got, err := c.Poll(cx, PollOptions{Prefix: id, Wait: -1}); err != nil || len(got) != 0 {
		t.Fatalf("a paused state was polled: %v %v", got, err)
	}
	if s, err := c.Resume(cx, id); err != nil || s.Paused {
		t.Fatalf("resume: %+v %v", s, err)
	}
	three := 3
	leased, err := c.Poll(cx, PollOptions{Prefix: id, Wait: 5, MinPriority: &three})
	if err != nil || len(leased) != 1 || leased[0].Priority != 3 {
		t.Fatalf("poll: %+v %v", leased, err)
	}
	if err := c.ReleaseLease(cx, id, leased[0].Lease.Token); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.GetState(cx, id); s.Status != Pending {
		t.Fatalf("after release: %s", s.Status)
	}
	if _, err := c.Retry(cx, id); !errors.Is(err, ErrConflict) {
		t.Fatalf("retry of a state that has not failed: %v", err)
	}
}

func TestBufferedSendRecvClose(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	name := unique("chan with spaces/and slashes é")
	if ch, err := c.MakeChan(cx, name, 2); err != nil || ch.Capacity != 2 {
		t.Fatalf("make: %+v %v", ch, err)
	}
	if _, err := c.MakeChan(cx, name, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MakeChan(cx, name, 3); !errors.Is(err, ErrExists) {
		t.Fatalf("another capacity: %v", err)
	}
	if s, err := c.Send(cx, name, 1, Detached); err != nil || s != "sent" {
		t.Fatalf("send: %q %v", s, err)
	}
	if _, err := c.Send(cx, name, nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(cx, name, 3, 0); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("a third send: %v", err)
	}
	if ch, err := c.GetChan(cx, name); err != nil || ch.Len != 2 || ch.Closed {
		t.Fatalf("info: %+v %v", ch, err)
	}
	page, err := c.ListChans(cx, name, 0, "")
	if err != nil || len(page.Chans) != 1 || page.Chans[0].Name != name {
		t.Fatalf("list: %+v %v", page, err)
	}
	for _, want := range []string{"1", "null"} {
		if got, err := c.Recv(cx, name, 1); err != nil || string(got.Data) != want || !got.OK {
			t.Fatalf("recv: %+v %v", got, err)
		}
	}
	if _, err := c.Recv(cx, name, 0); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try-recv: %v", err)
	}
	if _, err := c.Recv(cx, name, 1); !errors.Is(err, ErrTimeout) {
		t.Fatalf("recv with wait: %v", err)
	}
	if _, err := c.CloseChan(cx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CloseChan(cx, name); !errors.Is(err, ErrClosed) {
		t.Fatalf("close again: %v", err)
	}
	if _, err := c.Send(cx, name, 4, Detached); !errors.Is(err, ErrClosed) {
		t.Fatalf("send on closed: %v", err)
	}
	if got, err := c.Recv(cx, name, 1); err != nil || got.OK {
		t.Fatalf("recv from closed: %+v %v", got, err)
	}
}

func TestADetachedSendParksUntilReceived(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	name := unique("parked")
	if s, err := c.Send(cx, name, map[string]int{"x": 1}, Detached); err != nil || s != "parked" {
		t.Fatalf("send: %q %v", s, err)
	}
	if ch, err := c.GetChan(cx, name); err != nil || ch.Senders != 1 {
		t.Fatalf("info: %+v %v", ch, err)
	}
	if got, err := c.Recv(cx, name, 5); err != nil || string(got.Data) != `{"x":1}` {
		t.Fatalf("recv: %+v %v", got, err)
	}
}

func TestEachCodeIsItsOwnError(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	_, err := c.PutState(cx, unique("two-defaults"), Body().Select(NewSelect("g", Default(), Default())))
	var api *Error
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &api) || api.Status != 400 {
		t.Fatalf("two defaults: %v", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Fatal("a sentinel matched another code")
	}
	if _, err := c.GetChan(cx, unique("nothing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown channel: %v", err)
	}
	id := unique("lost")
	if _, err := c.PutState(cx, id, Body()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateState(cx, id, "6f1c4a8e-0000-4000-8000-000000000000", Body()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a token that is not the lease's: %v", err)
	}
	if _, err := c.UpdateState(cx, id, "not-a-uuid", Body()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a token that is not a uuid: %v", err)
	}
	if _, err := c.PutState(cx, id, Body().Data(func() {})); err == nil {
		t.Fatal("a body that cannot be JSON was sent")
	}
	// The code a 507 carries on the wire (openapi.yaml, DiskFull).
	if full := error(&Error{Status: 507, Code: "disk_full"}); !errors.Is(full, ErrDiskFull) {
		t.Fatal("a 507 disk_full is not ErrDiskFull")
	}
}

func TestClusterHealthReadyMetrics(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	info, err := c.Cluster(cx, true)
	if err != nil || info.State != "Leader" || len(info.Members) != 3 {
		t.Fatalf("cluster: %+v %v", info, err)
	}
	for _, u := range c.URLs() {
		if err := c.Health(cx, u); err != nil {
			t.Fatal(err)
		}
		// Readiness needs a heartbeat from the leader within 600 ms: a loaded
		// machine can miss one, so wait for it rather than demand it.
		eventually(t, u+" ready", 30e9, func() bool { return c.Ready(cx, u) == nil })
	}
	if m, err := c.Metrics(cx, ""); err != nil || !strings.Contains(m, "slct_raft_term") {
		t.Fatalf("metrics: %v", err)
	}
	if err := c.Health(cx, "http://elsewhere:1"); err == nil {
		t.Fatal("a node the client does not have was asked")
	}
}

func TestRetryRules(t *testing.T) {
	unavailable := func(code string) error { return &Error{Status: 503, Code: code} }
	refused := &TransportError{Connected: false}
	lost := &TransportError{Connected: true}
	for _, k := range []kind{safe, unsafe} {
		if !mayRetry(k, refused, "") {
			t.Error("a request that reached no node is not retried")
		}
	}
	for code := range nothingApplied {
		if !mayRetry(unsafe, unavailable(code), "") || mayRetry(once, unavailable(code), "") {
			t.Errorf("%s", code)
		}
	}
	for _, err := range []error{unavailable("leader_unreachable"), unavailable("outcome_unknown"), unavailable("shutting_down"), lost} {
		if mayRetry(unsafe, err, "") || !mayRetry(unsafe, err, "k") || !mayRetry(safe, err, "") {
			t.Errorf("%v", err)
		}
		if !OutcomeUnknown(err) {
			t.Errorf("%v: outcome known", err)
		}
	}
	for _, err := range []error{&Error{Status: 409, Code: "lease_lost"}, &Error{Status: 404, Code: "not_found"}, &Error{Status: 422, Code: "invalid_update"}} {
		if mayRetry(safe, err, "k") || OutcomeUnknown(err) {
			t.Errorf("%v", err)
		}
	}
	if !reflect.DeepEqual(ParseURLs(" http://a:1, http://b:2 ,"), []string{"http://a:1", "http://b:2"}) {
		t.Error("ParseURLs")
	}
	if _, err := New([]string{"127.0.0.1:7001"}, nil); err == nil {
		t.Error("a URL without a scheme")
	}
}
