package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestCreateServerTiming: every answer of POST /api/v1/requests says, in a
// Server-Timing header, how long the server took to make the create durable
// (commit) and how long it then waited for the request to be active (wait),
// so that a client of ?wait= can tell the call's own latency (its total
// minus wait) from the activation (its total). Without ?wait=, or for a
// request that is not pending, the wait is 0; with one that the agent
// answers only once the create waits, it is not. Before, the header was
// absent and the two figures were one (docs/benchmarks.md §28).
func TestCreateServerTiming(t *testing.T) {
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	c, err := client.New(e.srv.URL, e.admin)
	if err != nil {
		t.Fatal(err)
	}
	in := wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(time.Hour), Reason: "timing"}

	// The header as sent, for each kind of create answer.
	for _, tc := range []struct {
		name, query, source string
	}{
		{"no wait", "", "198.51.100.20"},
		{"wait=0s", "?wait=0s", "198.51.100.21"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := in
			in.Source = tc.source
			body, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/requests"+tc.query, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.admin)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("status %d, want 201", resp.StatusCode)
			}
			raw := resp.Header.Values("Server-Timing")
			timing := client.ParseServerTiming(raw)
			commit, hasCommit := timing["commit"]
			wait, hasWait := timing["wait"]
			if !hasCommit || !hasWait || commit <= 0 || wait != 0 || !strings.Contains(strings.Join(raw, ","), "commit;dur=") {
				t.Fatalf("Server-Timing %q (parsed %v): want commit;dur>0 and wait;dur=0", raw, timing)
			}
		})
	}

	// A create that waits for the agent: the agent reports the grant
	// applied only once the create waits, so the wait is not 0.
	cur, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan error, 1)
	go func() {
		ds, err := agent.Desired(ctx, cur.Revision, 10*time.Second)
		if err == nil {
			if err = waiting(hub, "web-01"); err == nil {
				err = agent.Report(ctx, wire.AgentReport{Revision: ds.Revision})
			}
		}
		reported <- err
	}()
	in.Source = "198.51.100.22"
	got, timing, err := c.CreateRequestTimed(ctx, in, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-reported; err != nil {
		t.Fatal(err)
	}
	if got.State != "active" || timing["commit"] <= 0 || timing["wait"] <= 0 {
		t.Fatalf("create with wait: state %q, Server-Timing %v; want active, commit and wait > 0", got.State, timing)
	}
}
