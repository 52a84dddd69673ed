package slct

import (
	"errors"
	"fmt"
	"testing"
)

// These tests kill nodes, so they run their own cluster.

func TestANodeThatRefusesConnectionsIsSkipped(t *testing.T) {
	cx := ctx(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("http://127.0.0.1:%d", port)
	c, err := New(append([]string{dead}, shared.urls()...), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := unique("skip")
	if _, err := c.PutState(cx, id, Body().Data("via the next node")); err != nil {
		t.Fatal(err)
	}
	if s, err := c.GetState(cx, id); err != nil || string(s.Data) != `"via the next node"` {
		t.Fatalf("read: %+v %v", s, err)
	}
	alone, _ := New([]string{dead}, &Options{Attempts: 2, MaxWait: 1})
	_, err = alone.GetState(cx, id)
	var tr *TransportError
	if !errors.As(err, &tr) || tr.Connected || OutcomeUnknown(err) {
		t.Fatalf("a dead node alone: %v", err)
	}
}

func TestTheClientRidesOutTheLossOfTheLeader(t *testing.T) {
	cluster, err := startCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cluster.stop(t.Failed()) }()
	cx := ctx(t)
	leader, err := cluster.leader()
	if err != nil {
		t.Fatal(err)
	}
	// The leader first: the client's first request after the kill goes to it.
	urls := []string{cluster.url(leader)}
	for i := 1; i <= 3; i++ {
		if i != leader {
			urls = append(urls, cluster.url(i))
		}
	}
	c, _ := New(urls, nil)
	id := unique("ride")
	if _, err := c.PutState(cx, id, Body().Select(NewSelect("g", Recv(id+"/in")))); err != nil {
		t.Fatal(err)
	}
	cluster.kill(leader)
	// Reads are retried on any 503 and go to the next node.
	if s, err := c.GetState(cx, id); err != nil || s.Status != Waiting {
		t.Fatalf("read after the kill: %+v %v", s, err)
	}
	// A write with an idempotency key is retried like a read.
	if s, err := c.Send(cx, id+"/in", 1, Detached, WithIdempotencyKey(unique("key"))); err != nil || s != "sent" {
		t.Fatalf("keyed send after the kill: %q %v", s, err)
	}
	leased, err := c.Poll(cx, PollOptions{Prefix: id, Wait: 5})
	if err != nil || len(leased) != 1 {
		t.Fatalf("poll: %v %v", leased, err)
	}
	if _, err := c.UpdateState(cx, id, leased[0].Lease.Token, Body().Selects()); err != nil {
		t.Fatal(err)
	}
	if next, err := cluster.leader(); err != nil || next == leader {
		t.Fatalf("new leader %d (was %d): %v", next, leader, err)
	}
}
