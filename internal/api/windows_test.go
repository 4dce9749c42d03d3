package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// windowAround writes a UTC window that opens at from and closes at to
// (less than a day later), on from's weekday: overnight when it crosses
// midnight.
func windowAround(from, to time.Time) string {
	from, to = from.UTC(), to.UTC()
	return fmt.Sprintf("%s %s-%s UTC", from.Format("Mon"), from.Format("15:04"), to.Format("15:04"))
}

// TestTimeWindows (issue 15, item 2): a request outside every window of
// its rule is refused with a problem naming the rule and the next opening;
// inside, it is granted with the deadline clipped to the window's end, and
// the response and the audit trail say so. A bad window is refused with
// the field that holds it.
func TestTimeWindows(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Minute)
	open, closed := windowAround(now.Add(-time.Minute), now.Add(30*time.Minute)), windowAround(now.Add(2*time.Hour), now.Add(3*time.Hour))

	_, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(3 * time.Hour), Windows: []string{"Mon-Fri 08:00-18:00"}}}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Body.Field != "rules[0].windows[0]" || !strings.Contains(ae.Body.Error, "DAYS HH:MM-HH:MM ZONE") {
		t.Fatalf("a window without a zone: %v, want 422 on rules[0].windows[0]", err)
	}

	if _, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(3 * time.Hour), Windows: []string{closed}},
		{Port: 443, MaxDuration: wire.Duration(3 * time.Hour), Windows: []string{open}},
	}}); err != nil {
		t.Fatal(err)
	}
	pol, err := f.c.Target(ctx, "web-01")
	if err != nil || len(pol.Policy.Rules) != 2 || len(pol.Policy.Rules[0].Windows) != 1 || pol.Policy.Rules[0].Windows[0] != closed {
		t.Fatalf("the policy does not show its windows: %v %+v", err, pol.Policy)
	}

	_, err = f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Body.Rule != "22/tcp" || ae.Body.NextOpening == nil ||
		!ae.Body.NextOpening.Equal(now.Add(2*time.Hour)) || !strings.Contains(ae.Body.Error, "outside the rule's time windows") ||
		!strings.Contains(ae.Body.Error, now.Add(2*time.Hour).Format("2006-01-02 15:04")+" UTC") {
		t.Fatalf("a request outside the window: %v (%+v), want 403 naming 22/tcp and opening at %s", err, ae, now.Add(2*time.Hour))
	}

	r, err := f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"443"}, Source: "198.51.100.7", Duration: wire.Duration(2 * time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	end := now.Add(30 * time.Minute)
	if !r.ExpiresAt.Equal(end) || r.WindowEnd == nil || !r.WindowEnd.Equal(end) {
		t.Fatalf("inside the window: expires %s, window end %v; want both %s", r.ExpiresAt, r.WindowEnd, end)
	}
	evs, err := f.st.ListAudit(ctx, store.AuditFilter{Action: "request.created", Target: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || (e.RequestID == r.ID && e.Details["clipped_to_window_end"] == end.Format(time.RFC3339))
	}
	if !found {
		t.Errorf("the audit trail does not say the deadline was clipped to %s: %+v", end, evs)
	}
	// Shorter than the window: not clipped.
	r2, err := f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"443"}, Source: "198.51.100.8", Duration: wire.Duration(10 * time.Minute), Reason: "x"})
	if err != nil || r2.WindowEnd != nil {
		t.Errorf("a short request: %v, window end %v; want not clipped", err, r2.WindowEnd)
	}
}

// TestApprovalsByGroup (issue 15, item 4): a rule asking for one approval
// from group:dba and one from group:security stays awaiting approval after
// the dba approval, says security is missing, refuses a second dba
// approver and counts a person in both groups once; the security approval
// grants it. The requester never counts, even as a member.
func TestApprovalsByGroup(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	_, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 5432, MaxDuration: wire.Duration(time.Hour),
		Approvals: []wire.GroupApproval{{From: "group:dba", Count: 1}, {From: "role:wizard", Count: 1}}}}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Body.Field != "rules[0].approvals[1].from" {
		t.Fatalf("an unknown role: %v, want 422 on rules[0].approvals[1].from", err)
	}
	if _, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 5432, MaxDuration: wire.Duration(time.Hour),
		Approvals: []wire.GroupApproval{{From: "group:dba", Count: 1}, {From: "group:security", Count: 1}}}}}); err != nil {
		t.Fatal(err)
	}
	member := func(name string, groups ...string) *client.Client {
		if _, err := f.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: authz.Approver, Scope: "*"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		secret, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, Groups: groups, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return f.c.WithToken(secret)
	}
	dave := member("dave", "dba", "security") // the requester, in both groups
	if _, err := f.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:dave", Role: authz.Requester, Scope: "*"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	bob, erin := member("bob", "dba"), member("erin", "dba")
	frank := member("frank", "dba", "security")
	carol := member("carol", "security")

	r, err := dave.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"5432"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil || r.State != "pending_approval" || r.ApprovalsRequired != 2 || len(r.MissingApprovals) != 2 {
		t.Fatalf("request: %v %+v", err, r)
	}
	if _, err := dave.Approve(ctx, r.ID, "", 0); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("the requester's own approval: %v, want 403", err)
	}
	r1, err := bob.Approve(ctx, r.ID, "", 0)
	if err != nil || r1.State != "pending_approval" || len(r1.MissingApprovals) != 1 || r1.MissingApprovals[0] != (wire.GroupApproval{From: "group:security", Count: 1}) {
		t.Fatalf("after dba: %v %s missing %+v; want awaiting approval, security missing", err, r1.State, r1.MissingApprovals)
	}
	if _, err := erin.Approve(ctx, r.ID, "", 0); client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "1 more from group:security") {
		t.Errorf("a second dba approver: %v, want 403 saying security is missing", err)
	}
	if got, _ := f.c.Request(ctx, r.ID); got.State != "pending_approval" || len(got.Decisions) != 1 {
		t.Fatalf("a refused approval changed the request: %s, %d decisions", got.State, len(got.Decisions))
	}
	// Frank is in both groups: he fills security (bob holds dba), and the
	// request is approved by two distinct people.
	r2, err := frank.Approve(ctx, r.ID, "", 0)
	if err != nil || r2.State != "pending" || len(r2.MissingApprovals) != 0 {
		t.Fatalf("after security: %v %s, want pending", err, r2.State)
	}

	// One person in both groups alone never satisfies both.
	r, err = f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"5432"}, Source: "198.51.100.8", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if r1, err := frank.Approve(ctx, r.ID, "", 0); err != nil || r1.State != "pending_approval" || len(r1.MissingApprovals) != 1 {
		t.Fatalf("frank alone: %v %s %+v, want still awaiting one group", err, r1.State, r1.MissingApprovals)
	}
	if r2, err := carol.Approve(ctx, r.ID, "", 0); err != nil || r2.State != "pending" {
		t.Fatalf("frank then carol: %v %s, want pending", err, r2.State)
	}
}
