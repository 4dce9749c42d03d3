package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// countingTransport counts the HTTP exchanges a client makes.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// waiting waits until a client long-poll waits on a request of target (from
// a goroutine other than the test's: it returns what went wrong).
func waiting(hub *api.Hub, target string) error {
	for deadline := time.Now().Add(10 * time.Second); hub.RequestWaiters(target) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("no long-poll waited on " + target + " within 10 s")
		}
	}
	return nil
}

// TestCreateRequestWaits: POST /api/v1/requests?wait=D creates the request
// and, while it is pending, waits for its agent to open it: the client has
// it active in one exchange (before, the wait was ignored and the answer was
// pending: the client needed a second exchange, GET ?wait=&state=pending).
// Without a wait, or for a request that is not pending (awaiting approval),
// the answer comes at once, as before.
func TestCreateRequestWaits(t *testing.T) {
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	cur, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	exchanges := &countingTransport{}
	c, err := client.New(e.srv.URL, e.admin, client.WithHTTPClient(&http.Client{Transport: exchanges}))
	if err != nil {
		t.Fatal(err)
	}
	in := wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "wait"}

	// The agent: it takes the new grant and reports it applied while the
	// create waits.
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
	got, err := c.CreateRequestWait(ctx, in, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "active" || exchanges.n.Load() != 1 {
		t.Fatalf("create with wait: state %q in %d exchanges, want active in 1", got.State, exchanges.n.Load())
	}
	if err := <-reported; err != nil {
		t.Fatal(err)
	}
	if len(got.Connect) == 0 {
		t.Errorf("the active request's answer has no connection hints: %+v", got)
	}

	// No wait: answered pending at once, as before.
	in.Source = "198.51.100.8"
	got, err = c.CreateRequestWait(ctx, in, 0)
	if err != nil || got.State != "pending" {
		t.Fatalf("create without wait: %q, %v; want pending", got.State, err)
	}

	// Awaiting approval is not pending: answered at once (the client
	// follows approvals with its own long-polls).
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour),
		Approval: &wire.Approval{Mode: "manual", Approvals: 1}}}})
	in.Source = "198.51.100.9"
	done := make(chan struct{})
	go func() {
		defer close(done)
		got, err = c.CreateRequestWait(ctx, in, 50*time.Second)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a create awaiting approval was held by the wait")
	}
	if err != nil || got.State != "pending_approval" {
		t.Fatalf("create awaiting approval with wait: %q, %v; want pending_approval", got.State, err)
	}
}

// TestCreateRequestWaitRechecks: the create's wait ends with the same checks
// as GET's long-poll (the code is shared): a token revoked during the wait
// gets 401, not the request's new state; the request stays created.
func TestCreateRequestWaitRechecks(t *testing.T) {
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, bobBinding, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, info, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bob, err := client.New(e.srv.URL, secret)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// During the wait: bob's token is revoked, then the request
		// changes (an admin revokes it).
		if err := waiting(hub, "web-01"); err != nil {
			t.Error(err)
			return
		}
		if _, err := e.st.RevokeToken(ctx, store.Actor{Name: "admin"}, info.ID, time.Now()); err != nil {
			t.Error(err)
		}
		rs, err := e.c.Requests(ctx, client.RequestFilter{Target: "web-01"})
		if err != nil || len(rs) != 1 {
			t.Errorf("requests: %v, %v", rs, err)
			return
		}
		if _, err := e.c.Revoke(ctx, rs[0].ID, "done"); err != nil {
			t.Error(err)
		}
	}()
	got, err := bob.CreateRequestWait(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(time.Hour), Reason: "stale"}, 30*time.Second)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("create with wait, token revoked during it: %v (state %q), want HTTP 401", err, got.State)
	}
	rs, err := e.c.Requests(ctx, client.RequestFilter{Target: "web-01"})
	if err != nil || len(rs) != 1 || rs[0].Requester != "bob" {
		t.Fatalf("after the refused answer: %+v, %v; want bob's request still there", rs, err)
	}
}

// TestCreateRequestBadWait: a wait that GET's long-poll refuses is refused
// alike (422 naming wait), and nothing is created: the wait is checked
// before the request.
func TestCreateRequestBadWait(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	body := `{"target":"web-01","ports":["22"],"source":"198.51.100.7","duration":"5m","reason":"bad wait"}`
	for _, wait := range []string{"-1s", "56s", "1h", "soon", "10"} {
		t.Run(wait, func(t *testing.T) {
			status, b := e.raw(t, http.MethodPost, "/api/v1/requests?wait="+wait, e.admin, "application/json", strings.NewReader(body))
			if status != http.StatusUnprocessableEntity || !strings.Contains(string(b), `"field": "wait"`) {
				t.Fatalf("wait=%s: %d %s, want 422 naming wait", wait, status, b)
			}
		})
	}
	rs, err := e.c.Requests(ctx, client.RequestFilter{Target: "web-01"})
	if err != nil || len(rs) != 0 {
		t.Fatalf("requests after bad waits: %+v, %v; want none", rs, err)
	}
	// GET's long-poll refuses the same waits the same way.
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(time.Minute), Reason: "get"})
	if err != nil {
		t.Fatal(err)
	}
	status, b := e.raw(t, http.MethodGet, "/api/v1/requests/"+r.ID+"?state=pending&wait=56s", e.admin, "", nil)
	if status != http.StatusUnprocessableEntity || !strings.Contains(string(b), `"field": "wait"`) {
		t.Fatalf("GET wait=56s: %d %s, want 422 naming wait", status, b)
	}
}

// TestCreateWaitReads counts the statements a create that waits runs beyond
// the create itself and the agent's report: one read after the wake-up (the
// request, its target and the token, as GET's long-poll). The create's own
// commit names its request to the hub; before Hub.CreatedGen it woke the
// wait at once for a second read of the still pending request.
func TestCreateWaitReads(t *testing.T) {
	ctx := context.Background()
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	in := func(src string) wire.RequestCreate {
		return wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src, Duration: wire.Duration(time.Hour), Reason: "reads"}
	}
	// What a create and a report cost alone (the second of each: the
	// target's first report differs).
	for _, src := range []string{"198.51.100.6", "198.51.100.7"} {
		before := e.st.Queries()
		if _, err := e.c.CreateRequest(ctx, in(src)); err != nil {
			t.Fatal(err)
		}
		created := e.st.Queries() - before
		ds, err := agent.DesiredSince(ctx, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		before = e.st.Queries()
		if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Version: "test"}); err != nil {
			t.Fatal(err)
		}
		if src == "198.51.100.7" {
			alone := created + e.st.Queries() - before
			// The same create, waiting, with the report during its wait.
			type answer struct {
				r   wire.Request
				err error
			}
			got := make(chan answer, 1)
			start := e.st.Queries()
			go func() {
				r, err := e.c.CreateRequestWait(ctx, in("198.51.100.8"), 30*time.Second)
				got <- answer{r, err}
			}()
			waitFor(t, "the create waiting", func() bool { return hub.RequestWaiters("web-01") > 0 })
			beforeDesired := e.st.Queries()
			ds, err := agent.DesiredSince(ctx, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			afterDesired := e.st.Queries()
			if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Version: "test"}); err != nil {
				t.Fatal(err)
			}
			a := <-got
			if a.err != nil || a.r.State != "active" {
				t.Fatalf("create with wait: %+v, %v; want active", a.r, a.err)
			}
			n := e.st.Queries() - start - (afterDesired - beforeDesired) - alone
			t.Logf("statements: create and report %d, the wait %d", alone, n)
			if n != 1 {
				t.Errorf("the create's wait ran %d statements, want 1 (one read after the agent's report)", n)
			}
		}
	}
}

// TestCreatedGenMissesNothing: the generation a waiting create hands to
// WatchRequest skips only the create's own change; an activation committed
// before the wait began still wakes it at once.
func TestCreatedGenMissesNothing(t *testing.T) {
	ctx := context.Background()
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	for _, activated := range []bool{false, true} {
		gen := hub.Gen()
		r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
			Duration: wire.Duration(time.Hour), Reason: "gen"})
		if err != nil {
			t.Fatal(err)
		}
		if activated {
			applied, err := agent.DesiredSince(ctx, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := agent.Report(ctx, wire.AgentReport{Revision: applied.Revision}); err != nil {
				t.Fatal(err)
			}
		}
		ch, cancel := hub.WatchRequest("web-01", r.ID, r.Version, hub.CreatedGen(r.ID, gen))
		select {
		case <-ch:
			if !activated {
				t.Error("the create's own change woke its wait")
			}
		default:
			if activated {
				t.Error("an activation before the wait began did not wake it: missed")
			}
		}
		cancel()
	}
}
