package slct

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"
)

// Handler resumes one leased state: it gets the state (results and lease included)
// and returns its update, which the worker PUTs under the lease. An error (or a
// panic) gives the lease back, so the state is redelivered at once.
type Handler func(ctx context.Context, s *State) (*StateBody, error)

// WorkerConfig says what a worker polls for, and how; zero values take the defaults
// in brackets.
type WorkerConfig struct {
	// Prefix: only states whose id starts with this [any].
	Prefix string
	// Concurrency: handlers running at once, and so leases held at once [4].
	Concurrency int
	// Lease: the lease length; the worker extends it every third of this while a
	// handler runs [30 s].
	Lease time.Duration
	// PollWait: seconds one long-poll waits, 1-300 [30].
	PollWait int
	// MinPriority: only states with at least this priority [any].
	MinPriority *int
	// Logger gets the worker's warnings [the log package's standard logger].
	Logger *log.Logger
}

// WorkerStats are a worker's counters since it was made.
type WorkerStats struct {
	// Polled: states leased and handed to the handler.
	Polled int64
	// Completed: updates the server accepted.
	Completed int64
	// Failed: handler errors and panics, and updates refused for another reason
	// than a lost lease.
	Failed int64
	// LeaseLost: states whose lease was lost before the update.
	LeaseLost int64
	// Heartbeats: lease extensions the server accepted.
	Heartbeats int64
	// PollErrors: polls that failed (the worker backs off and polls again).
	PollErrors int64
	// InFlight: handlers running now.
	InFlight int64
}

// Worker resumes processes by long-polling pending states and running a Handler for
// each.
//
// One loop long-polls for as many states as there are free handler slots, so a
// worker holds no more leases than it can work on. Each leased state runs in its own
// goroutine, with the lease extended every third of its length while the handler
// runs. Delivery is at-least-once: a handler whose lease was lost (it ran past the
// lease despite heartbeats, e.g. cut off from the cluster) finds its update refused
// with lease_lost and the state goes to someone else; handlers should be idempotent,
// or key their side effects on the state's id and version.
//
// Run stops when its context is done: no new poll starts, the poll in flight is
// abandoned (a state it leased in that instant is redelivered when the lease
// lapses), and the handlers already running finish and submit their updates before
// Run returns. Handlers get a context that is not cancelled by that.
type Worker struct {
	client  *Client
	cfg     WorkerConfig
	handler Handler

	polled, completed, failed, leaseLost, heartbeats, pollErrors, inFlight atomic.Int64
}

// maxBackoff is the longest pause after a failed poll.
const maxBackoff = 30 * time.Second

// NewWorker is a worker polling through client.
func NewWorker(client *Client, cfg WorkerConfig, handler Handler) *Worker {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 30
	}
	if cfg.Logger == nil {
		cfg.Logger = log.Default()
	}
	return &Worker{client: client, cfg: cfg, handler: handler}
}

// Stats are the counters now.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		Polled: w.polled.Load(), Completed: w.completed.Load(), Failed: w.failed.Load(),
		LeaseLost: w.leaseLost.Load(), Heartbeats: w.heartbeats.Load(),
		PollErrors: w.pollErrors.Load(), InFlight: w.inFlight.Load(),
	}
}

// Run polls and handles states until ctx is done, then waits for the running
// handlers and returns the counters.
func (w *Worker) Run(ctx context.Context) WorkerStats {
	slots := make(chan struct{}, w.cfg.Concurrency)
	var running sync.WaitGroup
	backoff := 100 * time.Millisecond
	for {
		// Wait for one free slot, then take every other free one.
		select {
		case <-ctx.Done():
			running.Wait()
			return w.Stats()
		case slots <- struct{}{}:
		}
		free := 1
	take:
		for free < w.cfg.Concurrency {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break take
			}
		}
		states, err := w.client.Poll(ctx, PollOptions{
			Prefix: w.cfg.Prefix, Wait: w.cfg.PollWait, Limit: free, Lease: w.cfg.Lease,
			MinPriority: w.cfg.MinPriority,
		})
		for i := len(states); i < free; i++ {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.pollErrors.Add(1)
			w.cfg.Logger.Printf("slct worker: poll failed: %v; retrying in %v", err, backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			if backoff *= 2; backoff > maxBackoff {
				backoff = maxBackoff
			}
			continue
		}
		backoff = 100 * time.Millisecond
		for i := range states {
			state := states[i]
			w.polled.Add(1)
			w.inFlight.Add(1)
			running.Add(1)
			go func() {
				defer func() { <-slots; w.inFlight.Add(-1); running.Done() }()
				w.handle(&state)
			}()
		}
	}
	running.Wait()
	return w.Stats()
}

// handle runs the handler on one leased state with heartbeats, then submits the
// update or gives the lease back.
func (w *Worker) handle(state *State) {
	if state.Lease == nil {
		// A poll always leases what it returns; nothing to do without a token.
		w.failed.Add(1)
		return
	}
	id, token := state.ID, state.Lease.Token
	ctx, stopBeats := context.WithCancel(context.Background())
	lost := make(chan struct{})
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		w.heartbeat(ctx, id, token, lost)
	}()
	body, err := w.run(state)
	stopBeats()
	<-beats
	if err != nil {
		w.failed.Add(1)
		w.cfg.Logger.Printf("slct worker: the handler failed on %q: %v", id, err)
		select {
		case <-lost:
			w.leaseLost.Add(1)
		default:
			w.release(id, token)
		}
		return
	}
	switch _, err := w.client.UpdateState(context.Background(), id, token, body); {
	case err == nil:
		w.completed.Add(1)
	case errors.Is(err, ErrLeaseLost):
		w.leaseLost.Add(1)
		w.cfg.Logger.Printf("slct worker: the lease of %q was lost; its update is void", id)
	default:
		w.failed.Add(1)
		w.cfg.Logger.Printf("slct worker: the update of %q failed: %v", id, err)
		w.release(id, token)
	}
}

// run calls the handler, turning a panic or a nil update into an error.
func (w *Worker) run(state *State) (body *StateBody, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	body, err = w.handler(context.Background(), state)
	if err == nil && body == nil {
		err = errors.New("the handler returned no update")
	}
	return body, err
}

// heartbeat extends the lease every third of its length until ctx is done; closes
// lost when the lease is gone.
func (w *Worker) heartbeat(ctx context.Context, id, token string, lost chan struct{}) {
	every := time.NewTicker(w.cfg.Lease / 3)
	defer every.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-every.C:
		}
		_, err := w.client.ExtendLease(ctx, id, token, w.cfg.Lease)
		switch {
		case err == nil:
			w.heartbeats.Add(1)
		case errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNotFound):
			close(lost)
			return
		case ctx.Err() == nil:
			w.cfg.Logger.Printf("slct worker: cannot extend the lease of %q: %v", id, err)
		}
	}
}

func (w *Worker) release(id, token string) {
	if err := w.client.ReleaseLease(context.Background(), id, token); err != nil {
		w.cfg.Logger.Printf("slct worker: cannot give back the lease of %q: %v", id, err)
	}
}
