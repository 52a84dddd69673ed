package slct

// A live three-node slct cluster for the tests: the built binary (SLCT_BIN) run three
// times as `slct serve` on 127.0.0.1 ephemeral ports, each with its own data
// directory under one temporary directory and its output in node-N.log there. A
// missing SLCT_BIN fails the tests (scripts/test-clients.sh sets it); nothing is
// skipped.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// callbackSecret is what the shared cluster signs callbacks with.
const callbackSecret = "s3cret-for-tests"

// shared is the cluster of every test that kills no node.
var shared *localCluster

func TestMain(m *testing.M) {
	c, err := startCluster("--callback-secret", callbackSecret)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = c
	code := m.Run()
	c.stop(code != 0)
	os.Exit(code)
}

type localCluster struct {
	bin, dir, peers string
	addrs           map[int]string
	procs           map[int]*exec.Cmd
	extra           []string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startCluster(extra ...string) (*localCluster, error) {
	bin := os.Getenv("SLCT_BIN")
	if bin == "" {
		return nil, fmt.Errorf("SLCT_BIN must name the built slct binary (scripts/test-clients.sh sets it)")
	}
	dir, err := os.MkdirTemp("", "slct-go-")
	if err != nil {
		return nil, err
	}
	c := &localCluster{bin: bin, dir: dir, addrs: map[int]string{}, procs: map[int]*exec.Cmd{}, extra: extra}
	for i := 1; i <= 3; i++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.addrs[i] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	c.peers = fmt.Sprintf("1=%s,2=%s,3=%s", c.addrs[1], c.addrs[2], c.addrs[3])
	for i := 1; i <= 3; i++ {
		if err := c.spawn(i); err != nil {
			c.stop(true)
			return nil, err
		}
	}
	for i := 1; i <= 3; i++ {
		i := i
		if err := await(60*time.Second, func() bool { return c.ready(i) }); err != nil {
			c.stop(true)
			return nil, fmt.Errorf("node %d not ready: %w", i, err)
		}
	}
	return c, nil
}

func (c *localCluster) url(i int) string { return "http://" + c.addrs[i] }

func (c *localCluster) urls() []string { return []string{c.url(1), c.url(2), c.url(3)} }

func (c *localCluster) spawn(i int) error {
	log, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("node-%d.log", i)))
	if err != nil {
		return err
	}
	defer log.Close()
	args := append([]string{"serve", "--id", fmt.Sprint(i), "--listen", c.addrs[i],
		"--data", filepath.Join(c.dir, fmt.Sprint(i)), "--peers", c.peers}, c.extra...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	c.procs[i] = cmd
	return nil
}

func (c *localCluster) kill(i int) {
	if p := c.procs[i]; p != nil {
		_ = p.Process.Kill()
		_ = p.Wait()
		delete(c.procs, i)
	}
}

func (c *localCluster) ready(i int) bool {
	client := http.Client{Timeout: 2 * time.Second}
	r, err := client.Get(c.url(i) + "/readyz")
	if err != nil {
		return false
	}
	r.Body.Close()
	return r.StatusCode == 200
}

// leader is the id of the leader as a running node sees it.
func (c *localCluster) leader() (int, error) {
	var leader int
	err := await(60*time.Second, func() bool {
		for i := range c.procs {
			client := http.Client{Timeout: 2 * time.Second}
			r, err := client.Get(c.url(i) + "/cluster")
			if err != nil {
				continue
			}
			var info struct {
				Leader *int `json:"leader"`
			}
			err = json.NewDecoder(r.Body).Decode(&info)
			r.Body.Close()
			if err == nil && info.Leader != nil && c.procs[*info.Leader] != nil {
				leader = *info.Leader
				return true
			}
		}
		return false
	})
	return leader, err
}

// stop kills the nodes and removes their files; after a failure it first prints the
// end of each node's log, which a test's own output does not show.
func (c *localCluster) stop(failed bool) {
	for i := range c.procs {
		c.kill(i)
	}
	if failed {
		for i := 1; i <= 3; i++ {
			log, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node-%d.log", i)))
			lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			fmt.Fprintf(os.Stderr, "--- node %d's log, last lines:\n%s\n", i, strings.Join(lines, "\n"))
		}
	}
	os.RemoveAll(c.dir)
}

// await polls cond until it holds, failing after limit.
func await(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func eventually(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	if err := await(limit, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

var counter atomic.Int64

// unique is a name no other test uses.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixMilli(), counter.Add(1))
}

func newClient(t *testing.T) *Client {
	t.Helper()
	c, err := New(shared.urls(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}
