package api_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// capsEnv is a server whose caps on live requests are perRequester and
// perTarget, with target web-01 (22/tcp and 3389/tcp auto-approved,
// 5985/tcp manual).
func capsEnv(t *testing.T, perRequester, perTarget int, edit func(*api.Deps)) *env {
	t.Helper()
	e := newEnvWith(t, func(d *api.Deps) {
		d.Limits.MaxLivePerRequester, d.Limits.MaxLivePerTarget = perRequester, perTarget
		if edit != nil {
			edit(d)
		}
	})
	e.addTarget(t, "web-01", "192.0.2.10")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(time.Hour)},
		{Port: 3389, MaxDuration: wire.Duration(time.Hour)},
		{Port: 5985, MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "manual", Approvals: 1}},
	}})
	return e
}

// requester returns a client of a user bound as requester everywhere.
func (e *env) requester(t *testing.T, name string) *client.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: authz.Requester, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e.c.WithToken(secret)
}

func ask(c *client.Client, source string, ports ...string) (wire.Request, error) {
	return c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: ports, Source: source,
		Duration: wire.Duration(time.Hour), Reason: "maintenance"})
}

// wantLimited checks err is a 429 naming limit.
func wantLimited(t *testing.T, what string, err error, limit string) {
	t.Helper()
	if client.StatusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), limit) {
		t.Fatalf("%s: %v, want 429 naming %s", what, err, limit)
	}
}

// TestLiveRequestCaps: a requester's live requests on a target, and a
// target's, are capped with a 429 that names the cap; a request awaiting
// approval counts; extending a grant one holds adds no request and works at
// the cap; a revoked request frees its place; the refusal changes nothing.
func TestLiveRequestCaps(t *testing.T) {
	e := capsEnv(t, 2, 3, nil)
	ctx := context.Background()
	alice, bob := e.requester(t, "alice"), e.requester(t, "bob")

	first, err := ask(alice, "198.51.100.1", "22")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ask(alice, "198.51.100.2", "5985"); err != nil { // awaiting approval: live too
		t.Fatal(err)
	}
	_, err = ask(alice, "198.51.100.3", "22")
	wantLimited(t, "alice's third live request", err, policy.LimitLivePerRequester)
	if !strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "web-01") {
		t.Errorf("the refusal %q does not say whose requests on which target", err)
	}
	live, err := alice.Requests(ctx, client.RequestFilter{})
	if err != nil || len(live) != 2 {
		t.Fatalf("alice's requests after the refusal: %d, %v; want the 2 she had", len(live), err)
	}

	// Extending the grant she holds (same source and port) is no new live
	// request: it supersedes the one it extends.
	ext, err := ask(alice, "198.51.100.1", "22")
	if err != nil {
		t.Fatalf("extending a grant at the cap: %v", err)
	}
	if old, _ := alice.Request(ctx, first.ID); old.State != "superseded" || old.SupersededBy != ext.ID {
		t.Errorf("the extended request is %s (superseded by %q), want superseded by %s", old.State, old.SupersededBy, ext.ID)
	}
	// An extension that also asks for a new port leaves the old request
	// nothing and still adds none; one that leaves the old request a port
	// adds one.
	if _, err := ask(alice, "198.51.100.1", "22", "3389"); err != nil {
		t.Fatalf("extending with one more port at the cap: %v", err)
	}
	_, err = ask(alice, "198.51.100.1", "3389")
	wantLimited(t, "a request leaving the request it extends one port", err, policy.LimitLivePerRequester)

	// The target's cap counts everyone's.
	if _, err := ask(bob, "198.51.100.9", "22"); err != nil {
		t.Fatal(err)
	}
	_, err = ask(bob, "198.51.100.10", "22")
	wantLimited(t, "the target's fourth live request", err, policy.LimitLivePerTarget)

	// Ending a request frees its place.
	if _, err := bob.Revoke(ctx, mustOnly(t, bob).ID, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(bob, "198.51.100.10", "22"); err != nil {
		t.Fatalf("a request after a revocation freed a place: %v", err)
	}

	// Each refusal is audited as request.refused naming the cap.
	refused, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.RequestRefused)})
	if err != nil || len(refused) != 3 {
		t.Fatalf("request.refused events: %d, %v; want 3", len(refused), err)
	}
	if refused[0].Target != "web-01" || refused[0].Details["limit"] != policy.LimitLivePerRequester {
		t.Errorf("refusal event = %+v", refused[0])
	}
}

func mustOnly(t *testing.T, c *client.Client) wire.Request {
	t.Helper()
	rs, err := c.Requests(context.Background(), client.RequestFilter{State: "pending"})
	if err != nil || len(rs) != 1 {
		t.Fatalf("pending requests: %d, %v; want 1", len(rs), err)
	}
	return rs[0]
}

// TestLiveRequestCapConcurrent: many requests at once cannot overshoot the
// cap (the count and the insert are one transaction).
func TestLiveRequestCapConcurrent(t *testing.T) {
	const cap, tries = 5, 24
	e := capsEnv(t, cap, 100, nil)
	var created, limited atomic.Int32
	var wg sync.WaitGroup
	for i := range tries {
		wg.Go(func() {
			_, err := ask(e.c, fmt.Sprintf("198.51.100.%d", i+1), "22")
			switch {
			case err == nil:
				created.Add(1)
			case client.StatusOf(err) == http.StatusTooManyRequests:
				limited.Add(1)
			default:
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if created.Load() != cap || limited.Load() != tries-cap {
		t.Errorf("%d created and %d refused, want %d and %d", created.Load(), limited.Load(), cap, tries-cap)
	}
	n, err := e.st.ListRequests(context.Background(), store.RequestFilter{Target: "web-01"})
	if err != nil || len(n) != cap {
		t.Errorf("stored requests: %d, %v; want %d", len(n), err, cap)
	}
}

// TestRefusalsVaryingTargets: a principal that varies the target name on
// every refused call (here: removing targets that do not exist, with a
// role that may not) does not get a row per call: beyond a bound of kinds
// per principal, its refusals are counted as one kind. Every refusal is
// still counted.
func TestRefusalsVaryingTargets(t *testing.T) {
	var refusals *api.RefusalLog
	t0 := time.Now()
	e := capsEnv(t, 1, 100, func(d *api.Deps) {
		refusals = api.NewRefusalLog(d.Store, slog.New(slog.DiscardHandler))
		d.Refusals = refusals
		d.Now = func() time.Time { return t0 }
	})
	ctx := context.Background()
	mallory := e.requester(t, "mallory")
	const n = 200
	for i := range n {
		if err := mallory.RemoveTarget(ctx, fmt.Sprintf("ghost-%d", i)); client.StatusOf(err) != http.StatusForbidden {
			t.Fatalf("mallory removing a target: %v, want 403", err)
		}
	}
	es, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.AccessDenied)})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) > 20 {
		t.Fatalf("%d access.denied rows for %d refusals with varying targets, want at most 20", len(es), n)
	}
	refusals.Flush(ctx, t0.Add(time.Minute))
	es, err = e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.AccessDenied)})
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, ev := range es {
		if ev.Actor != "mallory" {
			t.Errorf("an access.denied event by %q", ev.Actor)
		}
		total += ev.Details["count"].(float64)
	}
	if len(es) > 20 || total != n {
		t.Fatalf("after the minute: %d events counting %v refusals, want at most 20 counting %d", len(es), total, n)
	}
}

// TestRefusalsAggregated: the first refusal of a kind is audited at once;
// the N-1 identical ones after it within a minute are one audit event with
// count N-1, written when the minute ends; different refusals are
// different events; Close writes what is still counted.
func TestRefusalsAggregated(t *testing.T) {
	var refusals *api.RefusalLog
	t0 := time.Now()
	var now atomic.Pointer[time.Time]
	now.Store(&t0)
	e := capsEnv(t, 1, 100, func(d *api.Deps) {
		refusals = api.NewRefusalLog(d.Store, slog.New(slog.DiscardHandler))
		d.Refusals = refusals
		d.Now = func() time.Time { return *now.Load() }
	})
	ctx := context.Background()
	alice, mallory := e.requester(t, "alice"), e.requester(t, "mallory")
	if _, err := ask(alice, "198.51.100.1", "22"); err != nil {
		t.Fatal(err)
	}
	events := func(action audit.Action) []audit.Event {
		t.Helper()
		es, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(action)})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	const n = 7
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Second)
		now.Store(&at)
		_, err := ask(alice, "198.51.100.2", "22")
		wantLimited(t, "a request over the cap", err, policy.LimitLivePerRequester)
		// A requester may not remove targets: access.denied, 3 times.
		if i < 3 {
			if err := mallory.RemoveTarget(ctx, "web-01"); client.StatusOf(err) != http.StatusForbidden {
				t.Fatalf("mallory removing a target: %v, want 403", err)
			}
		}
		if i == 0 {
			// An attack in progress shows in the trail at once: the
			// first refusal of each kind is written when it happens.
			refused, denied := events(audit.RequestRefused), events(audit.AccessDenied)
			if len(refused) != 1 || refused[0].Details["count"] != float64(1) || refused[0].Actor != "alice" {
				t.Fatalf("request.refused right after the first refusal: %+v; want one by alice with count 1", refused)
			}
			if len(denied) != 1 || denied[0].Details["count"] != float64(1) || denied[0].Actor != "mallory" || denied[0].Target != "web-01" {
				t.Fatalf("access.denied right after the first refusal: %+v; want one by mallory with count 1", denied)
			}
		}
	}
	refusals.Flush(ctx, t0.Add(59*time.Second))
	if got := len(events(audit.RequestRefused)) + len(events(audit.AccessDenied)); got != 2 {
		t.Fatalf("%d refusal events before the minute ended, want the 2 first ones", got)
	}
	refusals.Flush(ctx, t0.Add(time.Minute))
	refused := events(audit.RequestRefused)
	if len(refused) != 2 || refused[1].Details["count"] != float64(n-1) || refused[1].Actor != "alice" ||
		!refused[1].At.Equal(t0.Add(time.Second).Truncate(time.Millisecond)) {
		t.Fatalf("request.refused events = %+v; want the first, then one at t0+1s by alice with count %d", refused, n-1)
	}
	if last := refused[1].Details["last_at"]; last != t0.Add((n-1)*time.Second).UTC().Format(time.RFC3339Nano) {
		t.Errorf("last_at = %v, want the time of the last refusal", last)
	}
	denied := events(audit.AccessDenied)
	if len(denied) != 2 || denied[1].Details["count"] != float64(2) || denied[1].Actor != "mallory" || denied[1].Target != "web-01" {
		t.Fatalf("access.denied events = %+v; want the first, then one by mallory with count 2", denied)
	}

	// A new minute: its first refusal is written at once again, and Close
	// (at shutdown) writes what was counted after it.
	for _, d := range []time.Duration{2 * time.Minute, 2*time.Minute + time.Second} {
		later := t0.Add(d)
		now.Store(&later)
		if _, err := ask(alice, "198.51.100.2", "22"); client.StatusOf(err) != http.StatusTooManyRequests {
			t.Fatalf("a request over the cap: %v", err)
		}
	}
	if refused := events(audit.RequestRefused); len(refused) != 3 || refused[2].Details["count"] != float64(1) {
		t.Fatalf("after a new minute's first refusal: %+v; want a third event with count 1", refused)
	}
	refusals.Close(ctx)
	if refused := events(audit.RequestRefused); len(refused) != 4 || refused[3].Details["count"] != float64(1) {
		t.Fatalf("after Close: %+v; want a fourth event with count 1", refused)
	}
	// After Close, refusals are written at once.
	if err := mallory.RemoveTarget(ctx, "web-01"); client.StatusOf(err) != http.StatusForbidden {
		t.Fatal(err)
	}
	if denied := events(audit.AccessDenied); len(denied) != 3 {
		t.Fatalf("a refusal after Close: %d access.denied events, want 3", len(denied))
	}
}
