// Command order is an order that waits for its payment or gives up after a timeout,
// with the Go client: each order is one slct state blocked on a Go-style select,
//
//	select {
//	case p := <-payments/<order>:   // paid
//	case <-time.After(5s):          // cancelled
//	}
//
// and a Worker long-polls the orders whose select completed, runs step on each and
// PUTs the result back under the lease. Here the process ends after one step; a
// longer one would return new selects instead of none.
//
//	slct dev &                                 # or any cluster
//	cd clients/go && go run ./examples/order
//
// SLCT_SERVER names the nodes, comma-separated (default http://127.0.0.1:7001); the
// client fails over between them. ORDER_TIMEOUT_MS sets the timeout (default 5000).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	slct "github.com/slct/slct/clients/go"
)

type order struct {
	Order   string          `json:"order"`
	Amount  int             `json:"amount"`
	Status  string          `json:"status"`
	Payment json.RawMessage `json:"payment,omitempty"`
}

// startOrder creates the order's state, blocked on its payment or a timer.
func startOrder(ctx context.Context, c *slct.Client, id string, amount int, timeoutMs int64) error {
	_, err := c.PutState(ctx, "order/"+id, slct.Body().
		Data(order{Order: id, Amount: amount, Status: "awaiting payment"}).
		Select(slct.NewSelect("main", slct.Recv("payments/"+id), slct.TimerAfter(timeoutMs))))
	return err
}

// step is the process: what an order does when its select completes.
func step(_ context.Context, s *slct.State) (*slct.StateBody, error) {
	var o order
	if err := json.Unmarshal(s.Data, &o); err != nil {
		return nil, err
	}
	result := s.Results[len(s.Results)-1]
	if result.Op == "recv" {
		o.Status, o.Payment = "paid", result.Data
	} else {
		o.Status = "cancelled: no payment in time"
	}
	return slct.Body().Data(o).Selects(), nil
}

func main() {
	servers := os.Getenv("SLCT_SERVER")
	if servers == "" {
		servers = "http://127.0.0.1:7001"
	}
	timeoutMs := int64(5000)
	if v := os.Getenv("ORDER_TIMEOUT_MS"); v != "" {
		var err error
		if timeoutMs, err = strconv.ParseInt(v, 10, 64); err != nil {
			log.Fatalf("ORDER_TIMEOUT_MS: %v", err)
		}
	}
	client, err := slct.New(slct.ParseURLs(servers), nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	run := strconv.FormatInt(time.Now().UnixMilli(), 10)
	paid, unpaid := run+"/a", run+"/b"

	worker := slct.NewWorker(client, slct.WorkerConfig{Prefix: "order/" + run + "/", Concurrency: 2, PollWait: 5}, step)
	stop, cancel := context.WithCancel(ctx)
	stopped := make(chan slct.WorkerStats)
	go func() { stopped <- worker.Run(stop) }()

	for _, o := range []struct {
		id     string
		amount int
	}{{paid, 42}, {unpaid, 7}} {
		if err := startOrder(ctx, client, o.id, o.amount, timeoutMs); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("orders %s and %s: awaiting payment\n", paid, unpaid)
	if _, err := client.Send(ctx, "payments/"+paid, map[string]any{"amount": 42, "card": "4242"}, slct.Detached); err != nil {
		log.Fatal(err)
	}
	for _, id := range []string{paid, unpaid} {
		for {
			s, err := client.GetState(ctx, "order/"+id)
			if err != nil {
				log.Fatal(err)
			}
			if s.Status == slct.Done {
				var o order
				_ = json.Unmarshal(s.Data, &o)
				fmt.Printf("order %s: %s\n", id, o.Status)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cancel()
	<-stopped
}
