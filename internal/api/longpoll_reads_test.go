package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestLongPollAnswerReads counts the statements a client's long-poll runs
// after its request changed (the agent's report activated it): the request,
// its target for the answer's connection hints, and the re-check of the
// caller's token are one read. They were three (GetRequest, GetToken,
// GetTarget), on the hottest call of an open loop of requests.
func TestLongPollAnswerReads(t *testing.T) {
	ctx := context.Background()
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	create := func(src string) wire.Request {
		t.Helper()
		r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src,
			Duration: wire.Duration(time.Hour), Reason: "reads"})
		if err != nil || r.State != "pending" {
			t.Fatalf("create: %+v, %v; want a pending request", r, err)
		}
		return r
	}
	// report has the agent confirm the state it is given; it returns the
	// statement count before the report.
	report := func() int64 {
		t.Helper()
		ds, err := agent.DesiredSince(ctx, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		before := e.st.Queries()
		if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Version: "test"}); err != nil {
			t.Fatal(err)
		}
		return before
	}
	// The report that activates a request nobody waits on (twice: the
	// first report of the target differs).
	create("198.51.100.6")
	report()
	create("198.51.100.7")
	b := report()
	alone := e.st.Queries() - b

	// The same with its requester waiting on it.
	r := create("198.51.100.8")
	type answer struct {
		r   wire.Request
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := e.c.WaitRequest(ctx, r.ID, "pending", 30*time.Second)
		got <- answer{r, err}
	}()
	waitFor(t, "the long-poll waiting", func() bool { return hub.RequestWaiters("web-01") > 0 })
	before := report()
	a := <-got
	total := e.st.Queries() - before
	if a.err != nil || a.r.State != "active" || len(a.r.Connect) == 0 {
		t.Fatalf("the long-poll: %+v, %v; want the active request with its connection hints", a.r, a.err)
	}
	n := total - alone
	t.Logf("statements: the report %d, the woken long-poll %d", alone, n)
	if n != 1 {
		t.Errorf("the woken long-poll ran %d statements, want 1 (request, target and token in one read)", n)
	}
}

// TestAbandonedLongPollReadsNothing: a client long-poll whose client went
// away during the wait reads nothing more. The reads after the wait run
// without their context's cancellation (store pointCtx), so before, a
// client that opened long-polls and dropped them made the server read the
// request, its target and the token (and the reader's roles) once more for
// each, to answer nobody.
func TestAbandonedLongPollReadsNothing(t *testing.T) {
	ctx := context.Background()
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.6",
		Duration: wire.Duration(time.Hour), Reason: "abandoned"})
	if err != nil {
		t.Fatal(err)
	}
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := httptest.NewRequestWithContext(pollCtx, http.MethodGet, "/api/v1/requests/"+r.ID+"?state=pending&wait=50s", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.handler.ServeHTTP(rec, req)
	}()
	waitFor(t, "the long-poll waiting", func() bool {
		select {
		case <-done:
			t.Fatalf("the long-poll answered at once: %d %s", rec.Code, rec.Body)
		default:
		}
		return hub.RequestWaiters("web-01") > 0
	})
	before := e.st.Queries()
	cancel()
	<-done
	if n := e.st.Queries() - before; n != 0 {
		t.Errorf("the abandoned long-poll ran %d statements after its client left, want 0", n)
	}
}

// TestReportPollReads counts the statements of an agent's report that
// carries its next long-poll, held until its wait ends: the report alone,
// plus what the poll's answer needs after the wait (the target with the
// credential's re-check, and the delta), and nothing more. Before, the poll
// read the target once more before its wait (the report's own update had
// just read its revision) and the credential apart from the target after it:
// two statements more on every agent exchange.
func TestReportPollReads(t *testing.T) {
	ctx := context.Background()
	e, agent, req, ds := grantedWeb01(t)
	rev := ds.Revision
	if err := agent.Report(ctx, wire.AgentReport{Revision: rev, Version: "test"}); err != nil {
		t.Fatal(err)
	}
	requestState(t, e, req.ID, "active")
	// A report alone (204), the same report as below.
	before := e.st.Queries()
	if err := agent.Report(ctx, wire.AgentReport{Revision: rev, Version: "test"}); err != nil {
		t.Fatal(err)
	}
	report := e.st.Queries() - before
	// A poll answered at once with its (empty) delta: its token check, the
	// target and the delta.
	before = e.st.Queries()
	if _, err := agent.DesiredSince(ctx, rev, rev, 0); err != nil {
		t.Fatal(err)
	}
	answer := e.st.Queries() - before - 1 // not its token check

	// The report with its poll, whose wait ends with nothing changed.
	before = e.st.Queries()
	got, answered, err := agent.ReportPoll(ctx, wire.AgentReport{Revision: rev, Version: "test"}, rev, rev, time.Second)
	n := e.st.Queries() - before
	if err != nil || !answered || got.Revision != rev || got.Since != rev || len(got.Changed) != 0 {
		t.Fatalf("report with a poll: %+v, %v, %v; want an empty delta at %d", got, answered, err, rev)
	}
	t.Logf("statements: the report %d, an answer %d, the report with its poll held %d", report, answer, n)
	if n != report+answer {
		t.Errorf("the report with its poll ran %d statements, want %d (the report, then the target with the credential and the delta after the wait)",
			n, report+answer)
	}
}
