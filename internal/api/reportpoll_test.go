package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// reportPolled is the answer of a report carrying its next poll, made in
// the background.
type reportPolled struct {
	ds       wire.DesiredState
	answered bool
	err      error
}

// reportPollAsync sends the report of rev with the long-poll after=since=rev
// waiting up to wait, in the background.
func reportPollAsync(agent *client.Client, rev int64, wait time.Duration) <-chan reportPolled {
	out := make(chan reportPolled, 1)
	go func() {
		ds, answered, err := agent.ReportPoll(context.Background(), wire.AgentReport{Revision: rev, Version: "test"}, rev, rev, wait)
		out <- reportPolled{ds, answered, err}
	}()
	return out
}

// requestState waits until request id is in state want (10 s at most).
func requestState(t *testing.T, e *env, id, want string) {
	t.Helper()
	waitFor(t, "request "+id+" "+want, func() bool {
		got, err := e.c.Request(context.Background(), id)
		return err == nil && got.State == want
	})
}

// TestReportCarriesPoll: a report that carries the desired long-poll's
// parameters (POST /api/v1/agent/report?after=N&since=N&rules=1&wait=…) is
// recorded first, exactly as a report alone (the request it confirms is
// active while the poll still waits), and is then answered as the long-poll
// would be: held until the next change, which it carries as a delta. Before,
// the parameters were ignored and the answer was 204: the agent needed a
// second exchange for its poll.
func TestReportCarriesPoll(t *testing.T) {
	e, agent, first, ds := grantedWeb01(t)
	ctx := context.Background()
	call := reportPollAsync(agent, ds.Revision, 10*time.Second)
	requestState(t, e, first.ID, "active") // recorded before the poll's wait
	select {
	case r := <-call:
		t.Fatalf("the report's poll answered before anything changed: %+v", r)
	default:
	}
	second := e.requestWeb01(t, "127.0.0.9", "second")
	r := <-call
	if r.err != nil || !r.answered {
		t.Fatalf("report carrying a poll: answered %v, %v; want the desired state", r.answered, r.err)
	}
	if r.ds.Target != "web-01" || r.ds.Since != ds.Revision || r.ds.Revision <= ds.Revision || len(r.ds.Changed) != 1 || len(r.ds.Grants) != 1 ||
		r.ds.Grants[0].Source != "127.0.0.9/32" {
		t.Fatalf("the poll's answer = %+v, want the delta since %d with the second request's grant", r.ds, ds.Revision)
	}

	// Its own report with the next poll, no wait: the answer comes at
	// once, the request it confirms is active.
	got, answered, err := agent.ReportPoll(ctx, wire.AgentReport{Revision: r.ds.Revision}, r.ds.Revision, r.ds.Revision, 0)
	if err != nil || !answered || got.Revision != r.ds.Revision || got.Since != r.ds.Revision || len(got.Changed) != 0 {
		t.Fatalf("report with a poll that does not wait: %+v, %v, %v; want an empty delta at %d", got, answered, err, r.ds.Revision)
	}
	requestState(t, e, second.ID, "active")

	// since 0 (the agent holds nothing): a snapshot.
	got, answered, err = agent.ReportPoll(ctx, wire.AgentReport{Revision: r.ds.Revision}, r.ds.Revision, 0, 0)
	if err != nil || !answered || got.Since != 0 || len(got.Grants) != 2 || len(got.Protected) != 1 {
		t.Fatalf("report with a snapshot poll: %+v, %v, %v; want both grants", got, answered, err)
	}

	// Without the parameters: 204, as before (older agents).
	status, b := e.raw(t, http.MethodPost, "/api/v1/agent/report", e.creds["web-01"], "application/json",
		strings.NewReader(fmt.Sprintf(`{"revision":%d}`, r.ds.Revision)))
	if status != http.StatusNoContent || len(b) != 0 {
		t.Errorf("a report alone: %d %q, want 204 without a body", status, b)
	}

	// The target removed: 410, whichever part finds it.
	if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := agent.ReportPoll(ctx, wire.AgentReport{Revision: r.ds.Revision}, r.ds.Revision, r.ds.Revision, 0); client.StatusOf(err) != http.StatusGone {
		t.Errorf("report with a poll after the target's removal: %v, want 410", err)
	}
}

// TestReportPollBadParameters: a poll parameter a long-poll would refuse is
// refused in a report too, with 422 naming it, before anything is recorded
// (the request the report would confirm stays pending).
func TestReportPollBadParameters(t *testing.T) {
	e, _, req, ds := grantedWeb01(t)
	body := fmt.Sprintf(`{"revision":%d}`, ds.Revision)
	for _, tc := range []struct{ query, field string }{
		{"after=-1", "after"},
		{"after=x", "after"},
		{"after=1&since=-1", "since"},
		{"after=1&wait=soon", "wait"},
		{"after=1&wait=-1s", "wait"},
		{"since=1", "since"}, // a poll's parameters without after: not a poll
		{"wait=5s", "wait"},
		{"rules=1", "rules"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			status, b := e.raw(t, http.MethodPost, "/api/v1/agent/report?"+tc.query, e.creds["web-01"], "application/json", strings.NewReader(body))
			if status != http.StatusUnprocessableEntity || !strings.Contains(string(b), tc.field) {
				t.Errorf("report?%s: %d %s, want 422 naming %s", tc.query, status, b, tc.field)
			}
			got, err := e.c.Request(context.Background(), req.ID)
			if err != nil || got.State != "pending" {
				t.Errorf("after the refused report?%s the request is %q (%v), want pending: nothing recorded", tc.query, got.State, err)
			}
		})
	}
}

// TestReportPollIsTheAgentsOwn: the report and its poll are one agent's,
// the credential's: web-02's agent claiming web-01's revision with a poll is
// refused (409, as a report alone) and confirms nothing of web-01; reporting
// its own, it gets web-02's state and is recorded connected, as a poll
// records it; a gateway's gets the gateway-mode answer.
func TestReportPollIsTheAgentsOwn(t *testing.T) {
	e, _, req, ds := grantedWeb01(t)
	ctx := context.Background()
	other := e.addTarget(t, "web-02")
	if _, _, err := other.ReportPoll(ctx, wire.AgentReport{Revision: ds.Revision}, ds.Revision, 0, 0); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("web-02's agent reporting web-01's revision %d with a poll: %v, want 409", ds.Revision, err)
	}
	own, err := e.c.Target(ctx, "web-02")
	if err != nil {
		t.Fatal(err)
	}
	got, answered, err := other.ReportPoll(ctx, wire.AgentReport{Revision: own.Agent.Revision}, own.Agent.Revision, 0, 0)
	if err != nil || !answered || got.Target != "web-02" || len(got.Grants) != 0 {
		t.Fatalf("web-02's report with a poll: %+v, %v, %v; want web-02's empty state", got, answered, err)
	}
	if r, err := e.c.Request(ctx, req.ID); err != nil || r.State != "pending" {
		t.Errorf("web-01's request after web-02's agent reported: %q (%v), want pending", r.State, err)
	}
	if tg, err := e.c.Target(ctx, "web-01"); err != nil || tg.Agent.AppliedRevision != 0 {
		t.Errorf("web-01's applied revision after web-02's agent reported: %+v (%v), want 0", tg.Agent, err)
	}
	tg, err := e.c.Target(ctx, "web-02")
	if err != nil || tg.Agent.State != store.AgentConnected || tg.Agent.AppliedRevision != own.Agent.Revision {
		t.Errorf("web-02's agent after its report with a poll: %+v (%v), want connected, applied %d", tg.Agent, err, own.Agent.Revision)
	}

	_, gw := gatewayEnv(t)
	got, answered, err = gw.ReportPoll(ctx, wire.AgentReport{Revision: 0, Mode: "gateway"}, 0, 0, 0)
	if err != nil || !answered || got.Target != "gw-1" || got.Mode != store.ModeGateway {
		t.Fatalf("a gateway's report with a poll: %+v, %v, %v; want the gateway-mode state", got, answered, err)
	}
}

// TestReportPollAcrossReplicas: two replicas share a PostgreSQL database;
// the agent's report with its poll lands on replica B while the request is
// made on A. B records the report (A sees the request active) and its poll
// wakes on A's next change (the store's change feed) and carries it.
func TestReportPollAcrossReplicas(t *testing.T) {
	url := testenv.Postgres(t)
	open := func() *env {
		st, err := store.OpenPostgres(context.Background(), url, store.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newEnvOn(t, st, nil)
	}
	a, b := open(), open()
	agentA := a.addTarget(t, "web-01", "198.51.100.10")
	a.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	first := a.requestWeb01(t, "my-ip", "first")
	ds, err := agentA.Desired(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	agentB, err := client.New(b.srv.URL, a.creds["web-01"])
	if err != nil {
		t.Fatal(err)
	}
	call := reportPollAsync(agentB, ds.Revision, 10*time.Second)
	requestState(t, a, first.ID, "active")
	second := a.requestWeb01(t, "127.0.0.9", "second")
	r := <-call
	if r.err != nil || !r.answered || r.ds.Target != "web-01" || r.ds.Since != ds.Revision || len(r.ds.Grants) != 1 || r.ds.Grants[0].Source != "127.0.0.9/32" {
		t.Fatalf("report with a poll on replica B: %+v, %v, %v; want the delta with A's second request", r.ds, r.answered, r.err)
	}
	if _, _, err := agentB.ReportPoll(context.Background(), wire.AgentReport{Revision: r.ds.Revision}, r.ds.Revision, r.ds.Revision, 0); err != nil {
		t.Fatal(err)
	}
	requestState(t, a, second.ID, "active")
}

// TestReplacedCredentialGetsNoState: the agent's credential is replaced
// (the target enrolled again, say after its host was lost) while a
// long-poll of the old one waits, as a GET or carried by a report. Its
// credential was checked when the call began, up to 25 s earlier: the
// answer after the wait must not hand the replaced credential's holder the
// desired state as it is now (a grant made after the replacement, its
// source and ports), which only the new agent may have. Before, both calls
// answered with the delta carrying the grant made after the replacement.
func TestReplacedCredentialGetsNoState(t *testing.T) {
	e, old, first, ds := grantedWeb01(t)
	ctx := context.Background()
	call := reportPollAsync(old, ds.Revision, 10*time.Second)
	requestState(t, e, first.ID, "active") // the report is recorded; its poll follows
	get := make(chan error, 1)
	go func() {
		got, err := old.DesiredSince(ctx, ds.Revision, ds.Revision, 10*time.Second)
		if err == nil {
			err = fmt.Errorf("answered %+v", got)
		}
		get <- err
	}()
	waitFor(t, "the old agent's polls open", func() bool {
		tg, err := e.c.Target(ctx, "web-01")
		return err == nil && tg.Agent.State == store.AgentConnected
	})

	tc, err := e.c.ReissueEnrollToken(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.srv.URL, "")
	if _, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	e.requestWeb01(t, "127.0.0.9", "after the replacement")

	if r := <-call; client.StatusOf(r.err) != http.StatusUnauthorized {
		t.Errorf("the replaced credential's report with a poll: %+v, %v, %v; want 401 and no state", r.ds, r.answered, r.err)
	}
	if err := <-get; client.StatusOf(err) != http.StatusUnauthorized {
		t.Errorf("the replaced credential's long-poll: %v; want 401 and no state", err)
	}
}

// heldBody is a request body whose first Read says so (started) and then
// waits for release: sent with Expect: 100-continue, the client reads it
// only once the handler, past the credential check, reads the body.
type heldBody struct {
	started, release chan struct{}
	r                io.Reader
	once             sync.Once
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.once.Do(func() {
		close(b.started)
		<-b.release
	})
	return b.r.Read(p)
}

// TestReplacedCredentialRecordsNoReport: an agent's report authenticated
// before its credential was replaced (the target enrolled again), whose
// body arrives after (a body may take the body timeout, 30 s, to come), is
// not recorded: it would confirm the pending request as applied by a host
// that no longer enforces the target. Alone, or carrying its poll. Before,
// both were recorded (the request went active) and the poll answered.
func TestReplacedCredentialRecordsNoReport(t *testing.T) {
	for _, query := range []string{"", "?after=%d&since=%d&wait=5s"} {
		t.Run("report"+query, func(t *testing.T) {
			e, _, first, ds := grantedWeb01(t)
			ctx := context.Background()
			q := query
			if q != "" {
				q = fmt.Sprintf(query, ds.Revision, ds.Revision)
			}
			body := &heldBody{started: make(chan struct{}), release: make(chan struct{}),
				r: strings.NewReader(fmt.Sprintf(`{"revision":%d}`, ds.Revision))}
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/agent/report"+q, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.creds["web-01"])
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Expect", "100-continue")
			hc := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
			type answer struct {
				status int
				err    error
			}
			done := make(chan answer, 1)
			go func() {
				resp, err := hc.Do(req)
				if err != nil {
					done <- answer{0, err}
					return
				}
				resp.Body.Close()
				done <- answer{resp.StatusCode, nil}
			}()
			<-body.started // the credential was accepted; the body is awaited
			tc, err := e.c.ReissueEnrollToken(ctx, "web-01")
			if err != nil {
				t.Fatal(err)
			}
			anon, _ := client.New(e.srv.URL, "")
			if _, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"}); err != nil {
				t.Fatal(err)
			}
			close(body.release)
			a := <-done
			if a.err != nil || a.status != http.StatusUnauthorized {
				t.Errorf("the replaced credential's report: %d, %v; want 401", a.status, a.err)
			}
			if got, err := e.c.Request(ctx, first.ID); err != nil || got.State != "pending" {
				t.Errorf("the request after the replaced credential's report: %q, %v; want pending (nothing recorded)", got.State, err)
			}
		})
	}
}
