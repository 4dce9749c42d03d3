package store_test

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// populate fills an SQLite store with some of everything: targets, an
// enrolled agent, policies, active and pending-approval requests,
// approvals, a revocation, bindings, a webhook with its deliveries, and the
// audit events of all of it. It returns the admin token and the agent's
// credential.
func populate(t *testing.T, s *store.Store) (admin, cred string) {
	t.Helper()
	ctx := t.Context()
	admin, cred, req := seed(t, s)
	if _, err := s.CreateWebhook(ctx, store.Actor{Name: "alice"}, store.Webhook{URL: "https://hooks.example/x", Format: "generic", Secret: "k"}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReportApplied(ctx, "web-1", req.Revision, "", nil, "1.0.0", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBinding(ctx, store.Actor{Name: "alice"}, authz.Binding{Principal: "group:ops", Role: authz.Approver, Scope: "*"}, t0); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 5432}, Approval: policy.Approval{Mode: policy.Manual, Approvals: 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateTarget(ctx, store.Actor{Name: "alice"}, "db-1", nil, t0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, store.Actor{Name: "alice"}, "db-1", pol, t0); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		r, err := s.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("user-%d", i)}, "db-1", policy.Request{
			Ports: []policy.Port{{Number: 5432, Protocol: policy.TCP}}, Source: netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", 10+i)),
			Duration: time.Hour, Reason: "migration test"}, policy.DefaultLimits(), t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApproveRequest(ctx, store.Actor{Name: "bob"}, r.ID, "ok", 0, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			if _, err := s.DenyRequest(ctx, store.Actor{Name: "carol"}, r.ID, "no", 0, t0.Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return admin, cred
}

var netipEqual = cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})

// TestCopySQLiteToPostgres: a populated SQLite database copied into an
// empty PostgreSQL database arrives whole: the audit chain verifies with the
// same head, tokens authenticate, requests, grants and deliveries are the
// same, the live-request caps count the same, and new rows get new ids
// (the chain goes on). A second copy into the now used database is refused.
func TestCopySQLiteToPostgres(t *testing.T) {
	ctx := t.Context()
	src := openSQLite(t, filepath.Join(t.TempDir(), "jitgate.db"))
	t.Cleanup(func() { src.Close() })
	admin, cred := populate(t, src)
	url := testenv.Postgres(t)
	dst := openPostgres(t, url)

	rep, err := store.CopySQLiteToPostgres(ctx, src, dst)
	if err != nil {
		t.Fatalf("CopySQLiteToPostgres: %v", err)
	}
	want, err := src.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audit.OK || rep.Audit.Events != want.Events || rep.Audit.Head != want.Head || want.Events < 20 {
		t.Errorf("copied audit trail %+v, want %+v (and at least 20 events)", rep.Audit, want)
	}
	for _, table := range []string{"targets", "requests", "grants", "tokens", "audit", "approvals", "bindings", "webhooks", "outbox"} {
		if rep.Rows[table] == 0 {
			t.Errorf("no rows of %s copied: %v", table, rep.Rows)
		}
	}
	for _, sec := range []string{admin, cred} {
		if _, err := dst.Authenticate(ctx, sec, t0); err != nil {
			t.Errorf("a token no longer authenticates after the copy: %v", err)
		}
	}
	for _, f := range []store.RequestFilter{{}, {Target: "db-1"}} {
		a, err1 := src.ListRequests(ctx, f)
		b, err2 := dst.ListRequests(ctx, f)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if diff := cmp.Diff(a, b, netipEqual); diff != "" {
			t.Errorf("requests %+v differ after the copy (-sqlite +postgres):\n%s", f, diff)
		}
	}
	for _, target := range []string{"web-1", "db-1"} {
		r1, _, g1, err1 := src.DesiredState(ctx, target, t0.Add(3*time.Minute))
		r2, _, g2, err2 := dst.DesiredState(ctx, target, t0.Add(3*time.Minute))
		if err1 != nil || err2 != nil || r1 != r2 || !cmp.Equal(g1, g2, netipEqual) {
			t.Errorf("%s: desired state revision %d %v / %d %v differ (%v, %v)", target, r1, g1, r2, g2, err1, err2)
		}
	}
	hooks, err := dst.ListWebhooks(ctx)
	if err != nil || len(hooks) != 1 {
		t.Fatalf("webhooks after the copy: %v, %v", hooks, err)
	}
	d1, _ := src.ListDeliveries(ctx, hooks[0].ID, 100)
	d2, _ := dst.ListDeliveries(ctx, hooks[0].ID, 100)
	if len(d1) == 0 || len(d1) != len(d2) {
		t.Errorf("%d webhook deliveries in SQLite, %d copied", len(d1), len(d2))
	}

	// The copy goes on: a new request gets a new grant and audit event,
	// and the live-request cap counts the copied live requests (rebuilt
	// by the triggers): user-0 already holds one live request on db-1.
	one := policy.DefaultLimits()
	one.MaxLivePerRequester = 1
	_, err = dst.CreateRequest(ctx, store.Actor{Name: "user-0"}, "db-1", policy.Request{Ports: []policy.Port{{Number: 5432, Protocol: policy.TCP}},
		Source: netip.MustParsePrefix("203.0.113.9/32"), Duration: time.Hour, Reason: "again"}, one, t0.Add(4*time.Minute))
	if le := (*policy.LimitError)(nil); !errors.As(err, &le) || le.Limit != policy.LimitLivePerRequester {
		t.Errorf("a second live request of user-0 under a cap of 1: %v, want the cap's refusal (the copied live request counts)", err)
	}
	r, err := dst.CreateRequest(ctx, store.Actor{Name: "dave"}, "web-1", policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}},
		Source: netip.MustParsePrefix("203.0.113.7/32"), Duration: time.Hour, Reason: "after"}, policy.DefaultLimits(), t0.Add(5*time.Minute))
	if err != nil {
		t.Fatalf("a request after the copy: %v", err)
	}
	if r.State != access.Pending {
		t.Errorf("request after the copy is %s, want pending", r.State)
	}
	if v, err := dst.VerifyAudit(ctx); err != nil || !v.OK || v.Events <= want.Events {
		t.Errorf("audit after new events on the copy: %+v, %v", v, err)
	}

	if _, err := store.CopySQLiteToPostgres(ctx, src, dst); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("a copy into a used database: %v, want ErrNotEmpty", err)
	}
}

// TestCopyKeepsTheAuditMark: the newest audit events were removed from the
// SQLite database (VerifyAudit says so: its AUTOINCREMENT counter is above
// the newest event left), then the database was copied to PostgreSQL. The
// copy took the rows but not the mark, so on PostgreSQL the shorter trail
// verified, removal laundered (and the copy, committed, only then failed
// on the differing heads). The copy carries the mark into
// audit_high_water: PostgreSQL reports the same missing events, and the
// copy says the trail it moved does not verify.
func TestCopyKeepsTheAuditMark(t *testing.T) {
	for _, c := range []struct{ name, remove, problem string }{
		{"newest three", `DELETE FROM audit WHERE id >= 6`, "events 6 to 8 are missing: the trail ends at event 5"},
		{"all", `DELETE FROM audit`, "events 1 to 8 are missing: the trail is empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			src, path := trail(t)
			if _, err := rwDB(t, path).Exec(c.remove); err != nil {
				t.Fatal(err)
			}
			if res := verify(t, src); res.OK || !strings.Contains(res.Problem, c.problem) {
				t.Fatalf("VerifyAudit on SQLite = %+v, want %q", res, c.problem)
			}
			dst := openPostgres(t, testenv.Postgres(t))
			_, err := store.CopySQLiteToPostgres(ctx, src, dst)
			if err == nil || !strings.Contains(err.Error(), c.problem) {
				t.Errorf("CopySQLiteToPostgres: %v, want an error saying %q", err, c.problem)
			}
			if res := verify(t, dst); res.OK || !strings.Contains(res.Problem, c.problem) {
				t.Errorf("VerifyAudit on the PostgreSQL copy = %+v, want %q", res, c.problem)
			}
		})
	}
}
