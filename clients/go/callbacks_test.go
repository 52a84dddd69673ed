package slct

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTheSignatureIsHmacSha256OfTimestampDotBody(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	mac := hmac.New(sha256.New, []byte("Jefe"))
	mac.Write([]byte("1764000000000." + string(body)))
	if got := Sign("Jefe", body, 1764000000000); got != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Fatal(got)
	}
}

func TestVerifyRefusesWrongStaleAndMissing(t *testing.T) {
	body, now := []byte(`{"a":1}`), time.Now()
	ts := now.UnixMilli()
	good := Sign("k", body, ts)
	if err := Verify("k", body, strconv.FormatInt(ts, 10), good, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	old := ts - 61000
	for _, c := range []struct{ secret, body, ts, sig string }{
		{"other", string(body), strconv.FormatInt(ts, 10), good},
		{"k", `{"a":2}`, strconv.FormatInt(ts, 10), good},
		{"k", string(body), strconv.FormatInt(old, 10), Sign("k", body, old)},
		{"k", string(body), "", good},
		{"k", string(body), strconv.FormatInt(ts, 10), ""},
		{"k", string(body), "soon", good},
	} {
		if err := Verify(c.secret, []byte(c.body), c.ts, c.sig, time.Minute, now); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestASignedCallbackIsAnsweredWithTheUpdate(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	id := unique("cb/ok")
	var mu sync.Mutex
	var seen []Delivery
	server := httptest.NewServer(NewCallbackHandler(callbackSecret, func(_ context.Context, s *State, d Delivery) (*StateBody, error) {
		mu.Lock()
		seen = append(seen, d)
		mu.Unlock()
		return Body().RawData(s.Results[0].Data).Selects(), nil
	}))
	defer server.Close()
	if _, err := c.PutState(cx, id, Body().Callback(server.URL+"/", 5000).Select(NewSelect("main", Recv(id+"/pay")))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(cx, id+"/pay", 7, Detached); err != nil {
		t.Fatal(err)
	}
	eventually(t, "done", 30e9, func() bool {
		s, err := c.GetState(cx, id)
		return err == nil && s.Status == Done && string(s.Data) == "7"
	})
	mu.Lock()
	defer mu.Unlock()
	if seen[0].StateID != id || seen[0].Attempt != 1 || !strings.HasPrefix(seen[0].IdempotencyKey, id+":") {
		t.Fatalf("delivery %+v", seen[0])
	}
}

func TestNilDefersAndTheReceiverPutsTheUpdateItself(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	id := unique("cb/defer")
	leases := make(chan string, 10)
	server := httptest.NewServer(NewCallbackHandler(callbackSecret, func(_ context.Context, _ *State, d Delivery) (*StateBody, error) {
		leases <- d.Lease
		return nil, nil
	}))
	defer server.Close()
	if _, err := c.PutState(cx, id, Body().Callback(server.URL, 0).Select(NewSelect("main", Default()))); err != nil {
		t.Fatal(err)
	}
	token := <-leases
	if s, err := c.UpdateState(cx, id, token, Body().Data("later").Selects()); err != nil || s.Status != Done {
		t.Fatalf("update: %+v %v", s, err)
	}
}

func TestAWrongSecretIsRefusedBeforeTheHandler(t *testing.T) {
	c, cx := newClient(t), ctx(t)
	id := unique("cb/bad")
	called := make(chan struct{}, 10)
	server := httptest.NewServer(NewCallbackHandler("not the secret", func(context.Context, *State, Delivery) (*StateBody, error) {
		called <- struct{}{}
		return Body(), nil
	}))
	defer server.Close()
	if _, err := c.PutState(cx, id, Body().Callback(server.URL, 0).Select(NewSelect("main", Default()))); err != nil {
		t.Fatal(err)
	}
	var last string
	eventually(t, "a failed attempt", 30e9, func() bool {
		s, err := c.GetState(cx, id)
		if err == nil && s.Attempts > 0 {
			last = s.LastError
		}
		return last != ""
	})
	_ = c.DeleteState(cx, id)
	if len(called) != 0 || !strings.Contains(last, "401") {
		t.Fatalf("called %d times, last error %q", len(called), last)
	}
}
