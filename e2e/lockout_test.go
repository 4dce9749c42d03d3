package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestBadTokenFloodOnAgentHost: an unprivileged process on a target sends
// bogus bearer tokens to the server from the agent's own address (here
// 127.0.0.1 in the target's namespace, where the agent talks to the server)
// for the whole test. The server refuses them (401, then 429), but the
// agent's own credential keeps working: each new request opens the port
// within the activation timeout and each revoke closes it within a second,
// with real packets. Before the fix, the failed-login limit answered the
// agent's polls with 429 too, so a revoke left the port open.
func TestBadTokenFloodOnAgentHost(t *testing.T) {
	l := newGatedLab(t)

	floodStart := time.Now()
	f := startFlood(t, l.Lab, fmt.Sprintf("http://127.0.0.1:%d/api/v1/agent/desired", testlab.APIPort))
	l.eventually("the flood is answered 429", 10*time.Second, func() bool { return f.count(http.StatusTooManyRequests) > 0 })

	for i := range 3 {
		openAndRevoke(t, l, "flood", i, "during the flood")
	}
	if tg := cliJSON[wire.Target](l, "target", "show", "web-01"); tg.Agent.State != "connected" {
		t.Errorf("agent %s after the flood, want connected", tg.Agent.State)
	}
	counts := f.stop()
	elapsed := time.Since(floodStart)
	t.Logf("flood answers by status over %s: %v", elapsed.Round(time.Millisecond), counts)
	// Five 401s at once, then one more each 12 s the limit gives back.
	most := 5 + int(elapsed/(12*time.Second)) + 1
	if n := counts[http.StatusUnauthorized]; n < 5 || n > most || counts[http.StatusTooManyRequests] < 10*n || len(counts) != 2 {
		t.Errorf("flood answers %v, want 5 to %d × 401 and the rest (most) 429", counts, most)
	}
}

// openAndRevoke is one round of a lockout test: a request for web-01's 22
// opens the port for client1, and its revoke closes it within a second.
// name goes into the reasons, during into the failure messages.
func openAndRevoke(t *testing.T, l *lab, name string, round int, during string) {
	t.Helper()
	req := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", fmt.Sprintf("%s %d", name, round), "--wait")
	if req.State != "active" {
		t.Fatalf("round %d: request %s %s, want active", round, req.State, during)
	}
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatalf("round %d: port 22 closed for an active request %s", round, during)
	}
	l.cli("revoke", req.ID, "--yes", "--reason", name+" test")
	l.eventually(fmt.Sprintf("round %d: port closed after the revoke %s", round, during), time.Second, func() bool {
		return !l.canConnect(client1, serverIP, 22)
	})
}

// flood sends GETs with random bogus bearer tokens from the target's
// namespace every 20 ms (far above the limit's one failure per 12 s) until
// stopped, and counts the answers by status.
type flood struct {
	mu     sync.Mutex
	counts map[int]int
	cancel context.CancelFunc
	done   chan struct{}
}

func startFlood(t *testing.T, l *testlab.Lab, url string) *flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &flood{counts: map[int]int{}, cancel: cancel, done: make(chan struct{})}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.ServerNS.DialContext(ctx, &net.Dialer{}, network, addr)
	}}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	go func() {
		defer close(f.done)
		defer tr.CloseIdleConnections()
		tick := time.NewTicker(20 * time.Millisecond) // pacing of the load, not a wait
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer jga_"+random.Secret())
			resp, err := c.Do(req)
			if err != nil {
				continue // the context ended, or the server restarts
			}
			resp.Body.Close()
			f.mu.Lock()
			f.counts[resp.StatusCode]++
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() { f.stop() })
	return f
}

func (f *flood) count(status int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[status]
}

// stop ends the flood and returns its answers by status.
func (f *flood) stop() map[int]int {
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int]int{}
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

// TestConnectionSquatterOnAgentHost: an unprivileged process on a target
// holds every place of the server's per-address connection cap (64) from
// the agent's own address with idle keep-alive connections, and the agent
// restarts meanwhile. The agent reconnects (its authenticated connections
// do not count, and the squatter's oldest unauthenticated ones make room),
// so a new request opens port 22 and a revoke closes it on time, with real
// packets. Before the fix, the cap refused the agent's new connections at
// TCP level: the request failed its activation and the agent stayed away.
func TestConnectionSquatterOnAgentHost(t *testing.T) {
	l := newGatedLab(t)

	// The squatter: as many idle keep-alive connections from 127.0.0.1 in
	// the target's namespace as the server answers, up to the cap of 64.
	addr := fmt.Sprintf("127.0.0.1:%d", testlab.APIPort)
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	squat := func() bool { // one more connection, answered once
		c, err := l.ServerNS.DialContext(context.Background(), &net.Dialer{}, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: jitgate\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return false
		}
		resp.Body.Close()
		held = append(held, c)
		return true
	}
	for i := 0; i < 64 && squat(); i++ {
	}

	// The agent restarts, and the squatter takes the place its old
	// connection leaves as soon as there is one: the agent must still get
	// back in.
	l.Agent.Kill()
	l.eventually("the squatter holds one connection more", 5*time.Second, squat)
	l.startAgent("")
	for i := range 2 {
		openAndRevoke(t, l, "squat", i, "while the cap is held")
	}
}
