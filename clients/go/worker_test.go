package slct

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func startOrders(t *testing.T, c *Client, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		id := fmt.Sprint(prefix, i)
		if _, err := c.PutState(ctx(t), id, Body().Data(i).Select(NewSelect("main", Recv(id+"/pay")))); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Send(ctx(t), id+"/pay", map[string]int{"amount": i}, Detached); err != nil {
			t.Fatal(err)
		}
	}
}

func quiet() *log.Logger { return log.New(io.Discard, "", 0) }

// runWorker runs w until the returned stop is called; stop returns Run's counters.
func runWorker(w *Worker) (stop func() WorkerStats) {
	cx, cancel := context.WithCancel(context.Background())
	done := make(chan WorkerStats, 1)
	go func() { done <- w.Run(cx) }()
	return func() WorkerStats { cancel(); return <-done }
}

func TestNHandlersFinishEveryPendingState(t *testing.T) {
	c := newClient(t)
	prefix := unique("w-many") + "/"
	var running, most atomic.Int64
	w := NewWorker(c, WorkerConfig{Prefix: prefix, Concurrency: 3, PollWait: 1, Logger: quiet()},
		func(_ context.Context, s *State) (*StateBody, error) {
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			running.Add(-1)
			var paid struct{ Amount int }
			if err := json.Unmarshal(s.Results[0].Data, &paid); err != nil {
				return nil, err
			}
			return Body().Data(map[string]int{"paid": paid.Amount}).Selects(), nil
		})
	stop := runWorker(w)
	startOrders(t, c, prefix, 9)
	eventually(t, "9 updates", 60e9, func() bool { return w.Stats().Completed == 9 })
	stats := stop()
	if stats.Polled != 9 || stats.Failed != 0 || stats.InFlight != 0 || most.Load() > 3 {
		t.Fatalf("stats %+v, most at once %d", stats, most.Load())
	}
	for i := 0; i < 9; i++ {
		s, err := c.GetState(ctx(t), fmt.Sprint(prefix, i))
		if err != nil || s.Status != Done || string(s.Data) != fmt.Sprintf(`{"paid":%d}`, i) {
			t.Fatalf("state %d: %+v %v", i, s, err)
		}
	}
}

func TestAFailingHandlerGivesTheLeaseBackAndTheStateComesAgain(t *testing.T) {
	c := newClient(t)
	prefix := unique("w-fail") + "/"
	var calls atomic.Int64
	w := NewWorker(c, WorkerConfig{Prefix: prefix, Concurrency: 1, Lease: time.Minute, PollWait: 1, Logger: quiet()},
		func(context.Context, *State) (*StateBody, error) {
			switch calls.Add(1) {
			case 1:
				return nil, errors.New("the first try fails")
			case 2:
				panic("the second try panics")
			}
			return Body().Selects(), nil
		})
	stop := runWorker(w)
	startOrders(t, c, prefix, 1)
	// A one-minute lease: redelivery within the deadline means the lease came back.
	eventually(t, "the state done", 30e9, func() bool {
		s, err := c.GetState(ctx(t), prefix+"0")
		return err == nil && s.Status == Done
	})
	stats := stop()
	if calls.Load() != 3 || stats.Failed != 2 || stats.Completed != 1 {
		t.Fatalf("calls %d, stats %+v", calls.Load(), stats)
	}
}

func TestASlowHandlerKeepsItsLeaseByHeartbeats(t *testing.T) {
	c := newClient(t)
	prefix := unique("w-slow") + "/"
	release := make(chan struct{})
	w := NewWorker(c, WorkerConfig{Prefix: prefix, Concurrency: 1, Lease: 900 * time.Millisecond, PollWait: 1, Logger: quiet()},
		func(context.Context, *State) (*StateBody, error) {
			<-release
			return Body().Selects(), nil
		})
	stop := runWorker(w)
	startOrders(t, c, prefix, 1)
	// Three heartbeats: the handler has held its 0.9 s lease well past its length.
	eventually(t, "three heartbeats", 30e9, func() bool { return w.Stats().Heartbeats >= 3 })
	if s, _ := c.GetState(ctx(t), prefix+"0"); s.Status != Leased {
		t.Fatalf("status %s", s.Status)
	}
	close(release)
	eventually(t, "the update", 30e9, func() bool { return w.Stats().Completed == 1 })
	if stats := stop(); stats.LeaseLost != 0 || stats.Polled != 1 {
		t.Fatalf("stats %+v", stats)
	}
}

func TestStopAbandonsThePollAndWaitsForRunningHandlers(t *testing.T) {
	c := newClient(t)
	prefix := unique("w-stop") + "/"
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	w := NewWorker(c, WorkerConfig{Prefix: prefix, Concurrency: 2, PollWait: 300, Logger: quiet()},
		func(context.Context, *State) (*StateBody, error) {
			once.Do(func() { close(started) })
			<-release
			return Body().Data("finished").Selects(), nil
		})
	stop := runWorker(w)
	startOrders(t, c, prefix, 1)
	<-started
	stopped := make(chan WorkerStats)
	t0 := time.Now()
	go func() { stopped <- stop() }()
	select {
	case <-stopped:
		t.Fatal("stop did not wait for the running handler")
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	stats := <-stopped
	// The second slot's 300 s poll was abandoned, not waited for.
	if time.Since(t0) > 20*time.Second || stats.Completed != 1 {
		t.Fatalf("stopped after %v, stats %+v", time.Since(t0), stats)
	}
	if s, _ := c.GetState(ctx(t), prefix+"0"); string(s.Data) != `"finished"` {
		t.Fatalf("data %s", s.Data)
	}
}
