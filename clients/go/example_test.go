package slct

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The example (examples/order) runs against the live cluster and prints both ends of
// the order process.
func TestOneOrderIsPaidTheOtherTimesOut(t *testing.T) {
	cmd := exec.Command("go", "run", "./examples/order")
	cmd.Env = append(os.Environ(), "SLCT_SERVER="+strings.Join(shared.urls(), ","), "ORDER_TIMEOUT_MS=1000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{`order \d+/a: paid`, `order \d+/b: cancelled: no payment in time`} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}
