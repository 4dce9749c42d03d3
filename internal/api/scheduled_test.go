package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestScheduledRequestStart (issue 15, item 1): a start in the past (beyond
// the minute of skew), more than 30 days ahead, or not a time is refused
// with a 4xx naming starts_at, and nothing is recorded; a start within the
// skew is now; a start ahead makes a scheduled request whose deadline is
// start + duration.
func TestScheduledRequestStart(t *testing.T) {
	e := newEnv(t)
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	now := time.Now().UTC()
	bad := []struct {
		name, start string
		status      int
		says        string
	}{
		{"in the past", now.Add(-2 * time.Minute).Format(time.RFC3339), http.StatusUnprocessableEntity, "start is in the past"},
		{"beyond 30 days", now.Add(31 * 24 * time.Hour).Format(time.RFC3339), http.StatusUnprocessableEntity, "too far ahead"},
		{"not a time", "tomorrow", http.StatusBadRequest, `parsing time "tomorrow"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"target":"web-01","ports":["22"],"source":"127.0.0.1","duration":"1h","reason":"x","starts_at":"` + tc.start + `"}`
			status, out := e.raw(t, http.MethodPost, "/api/v1/requests", e.admin, "application/json", strings.NewReader(body))
			var msg wire.Error
			if err := json.Unmarshal(out, &msg); err != nil || status != tc.status || !strings.Contains(msg.Error, tc.says) {
				t.Fatalf("starts_at %q: %d %s; want %d saying %q", tc.start, status, out, tc.status, tc.says)
			}
			if tc.status == http.StatusUnprocessableEntity && !strings.HasPrefix(msg.Error, "starts_at: ") {
				t.Errorf("the refusal does not name the field: %q", msg.Error)
			}
			if rs, err := e.st.ListRequests(context.Background(), store.RequestFilter{}); err != nil || len(rs) != 0 {
				t.Fatalf("a refused start recorded %d requests (%v)", len(rs), err)
			}
		})
	}
	skewed := now.Add(-30 * time.Second)
	r, err := e.c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
		Duration: wire.Duration(time.Hour), Reason: "x", StartsAt: &skewed})
	if err != nil || r.State != "pending" || r.StartsAt != nil {
		t.Fatalf("a start 30 s ago: %v, %s, starts %v; want pending now, no start", err, r.State, r.StartsAt)
	}
	later := now.Add(time.Hour).Truncate(time.Millisecond)
	r, err = e.c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.2",
		Duration: wire.Duration(time.Hour), Reason: "x", StartsAt: &later})
	if err != nil || r.State != "scheduled" || r.StartsAt == nil || !r.StartsAt.Equal(later) || !r.ExpiresAt.Equal(later.Add(time.Hour)) {
		t.Fatalf("a start in an hour: %v, %+v; want scheduled from %s to %s", err, r, later, later.Add(time.Hour))
	}
}

// TestScheduledApproverRecheck (issue 15, item 1): an approval given
// through the API records who the approver is, so that the start of a
// scheduled request asks again whether they still may approve on its
// target: the request bob approved fails at its start once bob lost his
// approver role, and nothing opens; the one erin approved, still an
// approver, starts.
func TestScheduledApproverRecheck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Protocol: "tcp", AllowedSources: []string{"127.0.0.0/8"},
		MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "manual", Approvals: 1}}}})
	carol := e.requester(t, "carol")
	bob := e.c.WithToken(e.approverEverywhere(t, "bob"))
	erin := e.c.WithToken(e.approverEverywhere(t, "erin"))
	// Within carol's token's hour: the start also asks that it has not expired.
	start := time.Now().UTC().Add(50 * time.Minute).Truncate(time.Millisecond)
	var ids []string
	for i, approver := range []*client.Client{bob, erin} {
		r, err := carol.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: fmt.Sprintf("127.0.0.%d", i+1),
			Duration: wire.Duration(30 * time.Minute), Reason: "change window", StartsAt: &start})
		if err != nil {
			t.Fatal(err)
		}
		if r, err = approver.Approve(ctx, r.ID, "ok", 0); err != nil || r.State != "scheduled" {
			t.Fatalf("approval: %v, %+v; want scheduled", err, r)
		}
		ids = append(ids, r.ID)
	}
	if err := e.st.DeleteBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:bob", Role: authz.Approver, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.StartScheduled(ctx, policy.DefaultLimits(), start.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []access.State{access.Failed, access.Pending} {
		r, err := e.st.GetRequest(ctx, ids[i])
		if err != nil || r.State != want {
			t.Errorf("request %d at its start: %v, %s (%q); want %s", i, err, r.State, r.Message, want)
		}
	}
	if _, _, gs, err := e.st.DesiredState(ctx, "web-01", start.Add(time.Second)); err != nil || len(gs) != 1 || gs[0].RequestID != ids[1] {
		t.Errorf("grants at the start: %+v, %v; want only erin's", gs, err)
	}
}
