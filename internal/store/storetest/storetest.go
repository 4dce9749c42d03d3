// Package storetest is the conformance suite every jitgate store must pass
// (SQLite today, PostgreSQL for HA later), in the manner of teleport's backend
// compliance suite: one set of expectations, so no store can drift from
// another.
//
// The suite talks to the store only through its exported methods and passes
// fixed instants as now; nothing depends on the wall clock.
package storetest

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// Run runs the suite. open must return a new, empty store and register its
// closing with t.Cleanup; every subtest gets its own.
func Run(t *testing.T, open func(t *testing.T) *store.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, *store.Store)
	}{
		{"Targets", testTargets},
		{"RemoveTarget", testRemoveTarget},
		{"Tokens", testTokens},
		{"Enroll", testEnroll},
		{"SetPolicy", testSetPolicy},
		{"CreateRequest", testCreateRequest},
		{"Refusals", testRefusals},
		{"Extension", testExtension},
		{"DesiredState", testDesiredState},
		{"DesiredChanges", testDesiredChanges},
		{"ReportApplied", testReportApplied},
		{"ReportAppliedError", testReportAppliedError},
		{"AgentTarget", testAgentTarget},
		{"AgentTargetChanges", testAgentTargetChanges},
		{"Revoke", testRevoke},
		{"RemovalConfirmation", testRemovalConfirmation},
		{"Sweep", testSweep},
		{"SweepPendingPastDeadline", testSweepPendingPastDeadline},
		{"ListAudit", testListAudit},
		{"ChangeFeed", testOnChange},
		{"ChangeFeedSubscribers", testFeedSubscribers},
		{"Leases", testLeases},
		{"SharedKey", testSharedKey},
		{"DeviceLogins", testDeviceLogins},
		{"ConcurrentRequests", testConcurrentRequests},
		{"ConcurrentExtension", testConcurrentExtension},
		{"ConcurrentEnroll", testConcurrentEnroll},
		{"Approvals", testApprovals},
		{"ApprovalRace", testApprovalRace},
		{"WindowsAndGroups", testWindowsAndGroups},
		{"Bindings", testBindings},
		{"UserTokens", testUserTokens},
		{"TokenLineage", testTokenLineage},
		{"TokenCascade", testTokenCascade},
		{"TokenOwners", testTokenOwners},
		{"LiveCaps", testLiveCaps},
		{"PruneTokens", testPruneTokens},
		{"Bastion", testBastion},
		{"RelayRoutes", testRelayRoutes},
		{"SessionPaging", testSessionPaging},
		{"BreakGlass", testBreakGlass},
	}
	tests = append(tests, contractTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, open(t))
		})
	}
}

// t0 is the instant every test starts at.
var t0 = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const (
	enrollTTL  = time.Hour
	activation = 2 * time.Minute
)

var (
	alice = store.Actor{Name: "alice", ClientAddr: "192.0.2.10"}
	bob   = store.Actor{Name: "bob", ClientAddr: "192.0.2.11"}
)

// cmpOpts compares store values: prefixes by ==, nil and empty alike, and
// grants by what the kernel sees; whose grant it is (request, requester) is
// checked where it matters (testBastion).
var cmpOpts = cmp.Options{cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty(),
	cmpopts.IgnoreFields(store.GrantRow{}, "RequestID", "Requester", "ID", "Target")}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func tcp(n uint16) policy.Port  { return policy.Port{Number: n, Protocol: policy.TCP} }
func udp(n uint16) policy.Port  { return policy.Port{Number: n, Protocol: policy.UDP} }

// testPolicy protects 22/tcp (from 198.51.100.0/24 or 2001:db8::/32, up to
// 2h), 443/tcp (per-request single address, up to 1h) and 53/udp.
func testPolicy(t *testing.T) policy.Policy {
	t.Helper()
	p, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), AllowedSources: []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8::/32")}, MaxDuration: 2 * time.Hour},
		{Port: tcp(443), MaxDuration: time.Hour},
		{Port: udp(53), AllowedSources: []netip.Prefix{pfx("198.51.100.0/24")}, MaxDuration: 30 * time.Minute},
	}})
	if err != nil {
		t.Fatalf("normalizing test policy: %v", err)
	}
	return p
}

// newTarget creates name at now with the test policy and returns its
// enrollment token. Its revision is 2 afterwards.
func newTarget(t *testing.T, s *store.Store, name string, now time.Time) string {
	t.Helper()
	_, tok, err := s.CreateTarget(t.Context(), alice, name, nil, now, enrollTTL)
	if err != nil {
		t.Fatalf("CreateTarget(%s): %v", name, err)
	}
	if _, err := s.SetPolicy(t.Context(), alice, name, testPolicy(t), now); err != nil {
		t.Fatalf("SetPolicy(%s): %v", name, err)
	}
	return tok
}

func ask(source string, d time.Duration, ports ...policy.Port) policy.Request {
	return policy.Request{Ports: ports, Source: pfx(source), Duration: d, Reason: "ticket-42"}
}

func mustRequest(t *testing.T, s *store.Store, actor store.Actor, target string, req policy.Request, now time.Time) store.Request {
	t.Helper()
	r, err := s.CreateRequest(t.Context(), actor, target, req, policy.DefaultLimits(), now)
	if err != nil {
		t.Fatalf("CreateRequest(%s, %v): %v", target, req, err)
	}
	return r
}

func mustGet(t *testing.T, s *store.Store, id string) store.Request {
	t.Helper()
	r, err := s.GetRequest(t.Context(), id)
	if err != nil {
		t.Fatalf("GetRequest(%s): %v", id, err)
	}
	return r
}

func mustReport(t *testing.T, s *store.Store, target string, rev int64, now time.Time) []store.Request {
	t.Helper()
	rs, err := s.ReportApplied(t.Context(), target, rev, "", nil, "", now)
	if err != nil {
		t.Fatalf("ReportApplied(%s, %d): %v", target, rev, err)
	}
	return rs
}

func mustTarget(t *testing.T, s *store.Store, name string) store.Target {
	t.Helper()
	tg, err := s.GetTarget(t.Context(), name)
	if err != nil {
		t.Fatalf("GetTarget(%s): %v", name, err)
	}
	return tg
}

func grants(t *testing.T, s *store.Store, target string, now time.Time) []store.GrantRow {
	t.Helper()
	_, _, gs, err := s.DesiredState(t.Context(), target, now)
	if err != nil {
		t.Fatalf("DesiredState(%s): %v", target, err)
	}
	return gs
}

func wantState(t *testing.T, s *store.Store, id string, want access.State) store.Request {
	t.Helper()
	r := mustGet(t, s, id)
	if r.State != want {
		t.Errorf("request %s is %s (%q), want %s", id, r.State, r.Message, want)
	}
	return r
}

func wantErrIs(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error = %v, want %v", what, err, want)
	}
}

// trail lists the audit events matching f as "action request-id" lines.
func trail(t *testing.T, s *store.Store, f store.AuditFilter) []string {
	t.Helper()
	es, err := s.ListAudit(t.Context(), f)
	if err != nil {
		t.Fatalf("ListAudit(%+v): %v", f, err)
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = strings.TrimSpace(string(e.Action) + " " + e.RequestID)
	}
	return out
}

func wantTrail(t *testing.T, s *store.Store, f store.AuditFilter, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, trail(t, s, f), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("audit trail for %+v (-want +got):\n%s", f, diff)
	}
}

func countRequests(t *testing.T, s *store.Store, f store.RequestFilter) int {
	t.Helper()
	rs, err := s.ListRequests(t.Context(), f)
	if err != nil {
		t.Fatalf("ListRequests: %v", err)
	}
	return len(rs)
}

func testTargets(t *testing.T, s *store.Store) {
	ctx := t.Context()
	tg, tok, err := s.CreateTarget(ctx, alice, "web-1", map[string]string{"env": "prod"}, t0, enrollTTL)
	if err != nil {
		t.Fatalf("CreateTarget: %v", err)
	}
	want := store.Target{Name: "web-1", Labels: map[string]string{"env": "prod"}, Revision: 1, AgentState: store.AgentNever, CreatedAt: t0}
	if diff := cmp.Diff(want, tg, cmpOpts); diff != "" {
		t.Errorf("created target (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(tok, "jg") {
		t.Errorf("enrollment token %q lacks the jg prefix", tok)
	}
	if got := mustTarget(t, s, "web-1"); !cmp.Equal(got, tg, cmpOpts) {
		t.Errorf("GetTarget = %+v, want %+v", got, tg)
	}

	_, tok2, err := s.CreateTarget(ctx, bob, "web-1", nil, at(time.Minute), enrollTTL)
	wantErrIs(t, "creating a duplicate target", err, store.ErrConflict)
	if tok2 != "" {
		t.Errorf("duplicate target returned enrollment token %q", tok2)
	}
	if n, _ := s.CountTokens(ctx, store.KindEnroll); n != 1 {
		t.Errorf("enrollment tokens after the duplicate = %d, want 1", n)
	}

	var fe *policy.FieldError
	if _, _, err := s.CreateTarget(ctx, alice, "Web_1", nil, t0, enrollTTL); !errors.As(err, &fe) || fe.Field != "name" {
		t.Errorf("CreateTarget(Web_1): error = %v, want a *policy.FieldError for name", err)
	}
	if _, _, err := s.CreateTarget(ctx, alice, "web-2", map[string]string{"Bad Key": "x"}, t0, enrollTTL); !errors.As(err, &fe) || fe.Field != "labels" {
		t.Errorf("CreateTarget with a bad label: error = %v, want a *policy.FieldError for labels", err)
	}

	if _, _, err := s.CreateTarget(ctx, alice, "db-1", nil, at(time.Minute), enrollTTL); err != nil {
		t.Fatalf("CreateTarget(db-1): %v", err)
	}
	ts, err := s.ListTargets(ctx)
	if err != nil {
		t.Fatalf("ListTargets: %v", err)
	}
	var names []string
	for _, tg := range ts {
		names = append(names, tg.Name)
	}
	if diff := cmp.Diff([]string{"db-1", "web-1"}, names); diff != "" {
		t.Errorf("ListTargets names (-want +got):\n%s", diff)
	}

	_, err = s.GetTarget(ctx, "nope")
	wantErrIs(t, "GetTarget(nope)", err, store.ErrNotFound)
	wantErrIs(t, "RemoveTarget(nope)", s.RemoveTarget(ctx, alice, "nope", t0), store.ErrNotFound)
	wantTrail(t, s, store.AuditFilter{}, "target.added", "target.added")
}

func testRemoveTarget(t *testing.T, s *store.Store) {
	ctx := t.Context()
	tok := newTarget(t, s, "web-1", t0)
	_, cred, err := s.Enroll(ctx, tok, nil, "", "", t0)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	active := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(time.Minute))
	mustReport(t, s, "web-1", active.Revision, at(time.Minute))
	pending := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(2*time.Minute))
	otherTok := newTarget(t, s, "db-1", t0)
	other := mustRequest(t, s, alice, "db-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(2*time.Minute))
	unenrolledTok := newTarget(t, s, "cache-1", t0)

	if err := s.RemoveTarget(ctx, bob, "web-1", at(3*time.Minute)); err != nil {
		t.Fatalf("RemoveTarget: %v", err)
	}
	_, err = s.GetTarget(ctx, "web-1")
	wantErrIs(t, "GetTarget after removal", err, store.ErrNotFound)
	for _, id := range []string{active.ID, pending.ID} {
		r := wantState(t, s, id, access.Revoked)
		if r.Message != "target removed" || r.EndedAt == nil || !r.EndedAt.Equal(at(3*time.Minute)) {
			t.Errorf("request %s after removal: message %q, ended %v; want \"target removed\" at %v", id, r.Message, r.EndedAt, at(3*time.Minute))
		}
		// Its grants may stay in the kernel until the deadline, and no
		// agent will ever confirm their removal.
		if r.Removal == nil || r.Removal.Confirmable || r.RemovalEnforcer != "" || r.Removal.State(at(3*time.Minute)) != access.RemovalUnconfirmed ||
			!r.Removal.Deadline.Equal(r.ExpiresAt) || r.Removal.State(r.ExpiresAt) != access.RemovalDeadlinePassed {
			t.Errorf("request %s after removal: removal %+v (enforcer %q), want unconfirmable and unconfirmed until %v", id, r.Removal, r.RemovalEnforcer, r.ExpiresAt)
		}
	}
	// The agent credential stays, so the agent, whenever it comes back,
	// learns that its target is gone (the API answers 410) and removes its
	// table, instead of being refused (401) and leaving it behind.
	if p, err := s.Authenticate(ctx, cred, at(3*time.Minute)); err != nil || p.Kind != store.KindAgent || p.Subject != "web-1" {
		t.Errorf("agent credential of a removed target: %+v, %v; want the agent of web-1", p, err)
	}
	_, _, _, err = s.DesiredState(ctx, "web-1", at(3*time.Minute))
	wantErrIs(t, "DesiredState of a removed target", err, store.ErrNotFound)
	_, err = s.ReportApplied(ctx, "web-1", 1, "", nil, "", at(3*time.Minute))
	wantErrIs(t, "ReportApplied of a removed target", err, store.ErrNotFound)

	// Other targets are untouched.
	wantState(t, s, other.ID, access.Pending)
	if _, err := s.Authenticate(ctx, otherTok, at(3*time.Minute)); err != nil {
		t.Errorf("enrollment token of another target: %v", err)
	}
	if gs := grants(t, s, "db-1", at(3*time.Minute)); len(gs) != 1 {
		t.Errorf("grants of db-1 = %v, want 1", gs)
	}

	// An enrollment token dies with its target.
	if err := s.RemoveTarget(ctx, alice, "cache-1", at(4*time.Minute)); err != nil {
		t.Fatalf("RemoveTarget(cache-1): %v", err)
	}
	if _, _, err := s.Enroll(ctx, unenrolledTok, nil, "", "", at(4*time.Minute)); !errors.Is(err, store.ErrUnauthorized) {
		t.Errorf("Enroll with the token of a removed target: error = %v, want ErrUnauthorized", err)
	}

	// A target created again under the same name starts afresh, and the old
	// agent credential stays dead.
	tg, _, err := s.CreateTarget(ctx, alice, "web-1", nil, at(5*time.Minute), enrollTTL)
	if err != nil {
		t.Fatalf("re-creating web-1: %v", err)
	}
	if tg.Revision != 1 || tg.Policy != nil {
		t.Errorf("re-created target: revision %d, policy %v; want 1, nil", tg.Revision, tg.Policy)
	}
	if gs := grants(t, s, "web-1", at(5*time.Minute)); len(gs) != 0 {
		t.Errorf("re-created target inherited grants %v", gs)
	}
	_, err = s.Authenticate(ctx, cred, at(5*time.Minute))
	wantErrIs(t, "old agent credential after re-creation", err, store.ErrUnauthorized)

	wantTrail(t, s, store.AuditFilter{Target: "web-1"},
		"target.added", "policy.set", "agent.enrolled",
		"request.created "+active.ID, "request.activated "+active.ID, "request.created "+pending.ID,
		"request.revoked "+active.ID, "request.revoked "+pending.ID, "target.removed",
		"target.added")
}

func testTokens(t *testing.T, s *store.Store) {
	ctx := t.Context()
	sec, err := s.CreateAdminToken(ctx, store.Actor{Name: audit.System}, "root", t0)
	if err != nil {
		t.Fatalf("CreateAdminToken: %v", err)
	}
	p, err := s.Authenticate(ctx, sec, at(10000*time.Hour))
	if err != nil {
		t.Fatalf("Authenticate(admin): %v", err)
	}
	if p.Kind != store.KindAdmin || p.Subject != "root" || p.TokenID == "" {
		t.Errorf("admin principal = %+v, want kind admin, subject root and an id", p)
	}
	sec2, err := s.CreateAdminToken(ctx, store.Actor{Name: "root"}, "carol", t0)
	if err != nil {
		t.Fatalf("CreateAdminToken(carol): %v", err)
	}
	p2, err := s.Authenticate(ctx, sec2, t0)
	if err != nil {
		t.Fatalf("Authenticate(carol): %v", err)
	}
	if sec2 == sec || p2.TokenID == p.TokenID || p2.Subject != "carol" {
		t.Errorf("second admin token: secret equal %v, id %q vs %q, subject %q", sec2 == sec, p2.TokenID, p.TokenID, p2.Subject)
	}
	if n, err := s.CountTokens(ctx, store.KindAdmin); err != nil || n != 2 {
		t.Errorf("CountTokens(admin) = %d, %v; want 2", n, err)
	}

	for _, bad := range []string{"", "jg", "jga_", "jga_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", sec + "x", sec[:len(sec)-1],
		strings.ToUpper(sec), "Bearer " + sec, " " + sec, strings.Repeat("jg", 100), p.TokenID, "' OR 1=1 --"} {
		if _, err := s.Authenticate(ctx, bad, t0); !errors.Is(err, store.ErrUnauthorized) {
			t.Errorf("Authenticate(%q): error = %v, want ErrUnauthorized", bad, err)
		}
	}

	// An enrollment token expires after its TTL, at the instant exactly.
	tok := newTarget(t, s, "web-1", t0)
	if p, err := s.Authenticate(ctx, tok, at(enrollTTL-time.Millisecond)); err != nil || p.Kind != store.KindEnroll || p.Subject != "web-1" {
		t.Errorf("enrollment token before expiry = %+v, %v; want kind enroll for web-1", p, err)
	}
	_, err = s.Authenticate(ctx, tok, at(enrollTTL))
	wantErrIs(t, "enrollment token at its expiry", err, store.ErrUnauthorized)
	_, _, err = s.Enroll(ctx, tok, nil, "", "", at(enrollTTL+time.Minute))
	wantErrIs(t, "Enroll with an expired token", err, store.ErrUnauthorized)

	wantTrail(t, s, store.AuditFilter{Action: string(audit.TokenCreated)}, "token.created", "token.created")
}

// testAgentTarget checks the long-poll's read after its wait: the fields
// an answer to the agent is made of are the target's as GetTarget reads
// them (name, revision, mode, policy, creation time), and the credential
// is live until the target enrolls again; a removed target is not found.
func testAgentTarget(t *testing.T, s *store.Store) {
	ctx := t.Context()
	tok := newTarget(t, s, "web-1", t0)
	_, cred, err := s.Enroll(ctx, tok, []string{"192.0.2.5"}, "1.2.3", "", at(time.Minute))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	p, err := s.Authenticate(ctx, cred, at(time.Minute))
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if _, err := s.ReportAppliedWith(ctx, "web-1", p.TokenID, 2, "", nil, "", at(2*time.Minute), &store.AgentReport{Mode: store.ModeGateway}); err != nil {
		t.Fatalf("report: %v", err)
	}
	want := mustTarget(t, s, "web-1")
	got, live, err := s.AgentTarget(ctx, "web-1", p.TokenID)
	if err != nil || !live {
		t.Fatalf("AgentTarget = %v, %v; want the target and a live credential", live, err)
	}
	if got.Name != want.Name || got.Revision != want.Revision || got.Mode != store.ModeGateway || got.Mode != want.Mode ||
		!got.CreatedAt.Equal(want.CreatedAt) || !cmp.Equal(got.Policy, want.Policy, cmpOpts) || got.Policy == nil {
		t.Errorf("AgentTarget = %+v\nwant the fields of %+v", got, want)
	}
	// The policy is the caller's own copy.
	got.Policy.Rules[0].Port.Number = 1
	if again, _, err := s.AgentTarget(ctx, "web-1", p.TokenID); err != nil || again.Policy.Rules[0].Port.Number != 22 {
		t.Errorf("AgentTarget after the caller changed its copy: %+v, %v", again.Policy, err)
	}
	tok2, err := s.ReissueEnrollToken(ctx, alice, "web-1", at(3*time.Minute), enrollTTL)
	if err != nil {
		t.Fatalf("ReissueEnrollToken: %v", err)
	}
	if _, _, err := s.Enroll(ctx, tok2, nil, "", "", at(4*time.Minute)); err != nil {
		t.Fatalf("Enroll again: %v", err)
	}
	if _, live, err := s.AgentTarget(ctx, "web-1", p.TokenID); err != nil || live {
		t.Errorf("AgentTarget with the replaced credential = %v, %v; want not live", live, err)
	}
	if err := s.RemoveTarget(ctx, alice, "web-1", at(5*time.Minute)); err != nil {
		t.Fatalf("RemoveTarget: %v", err)
	}
	_, _, err = s.AgentTarget(ctx, "web-1", p.TokenID)
	wantErrIs(t, "AgentTarget of a removed target", err, store.ErrNotFound)
}

// testAgentTargetChanges checks the long-poll's read after its wait for an
// agent that takes deltas: the target, the credential and the delta it
// returns in one statement are AgentTarget's and DesiredChangesOf's, for
// every revision the agent may hold (none, older, current, ahead), through
// grants added, revoked, expired at now, and a change of the rules.
func testAgentTargetChanges(t *testing.T, s *store.Store) {
	ctx := t.Context()
	tok := newTarget(t, s, "web-1", t0)
	_, cred, err := s.Enroll(ctx, tok, []string{"192.0.2.5"}, "", "", at(time.Minute))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	p, err := s.Authenticate(ctx, cred, at(time.Minute))
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	exact := cmp.Options{cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()}
	check := func(step string, now time.Time) {
		t.Helper()
		want, wantLive, err := s.AgentTarget(ctx, "web-1", p.TokenID)
		if err != nil {
			t.Fatalf("%s: AgentTarget: %v", step, err)
		}
		for after := int64(0); after <= want.Revision+1; after++ {
			wantD, err := s.DesiredChangesOf(ctx, want, after, now)
			if err != nil {
				t.Fatalf("%s: DesiredChangesOf(%d): %v", step, after, err)
			}
			got, live, d, err := s.AgentTargetChanges(ctx, "web-1", p.TokenID, after, now)
			if err != nil {
				t.Fatalf("%s: AgentTargetChanges(%d): %v", step, after, err)
			}
			if live != wantLive || got.Name != want.Name || got.Revision != want.Revision || got.Mode != want.Mode ||
				!got.CreatedAt.Equal(want.CreatedAt) || !cmp.Equal(got.Policy, want.Policy, exact) {
				t.Errorf("%s, after %d: target %+v (live %v), want %+v (live %v)", step, after, got, live, want, wantLive)
			}
			if diff := cmp.Diff(wantD, d, exact); diff != "" {
				t.Errorf("%s, after %d: delta differs from DesiredChangesOf (-want +got):\n%s", step, after, diff)
			}
		}
	}
	check("no grant", at(time.Minute))
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", 30*time.Minute, tcp(22)), at(2*time.Minute))
	r2 := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22), tcp(443)), at(3*time.Minute))
	check("two requests", at(4*time.Minute))
	mustReport(t, s, "web-1", r2.Revision, at(4*time.Minute))
	check("r1 expired at now", at(40*time.Minute))
	if _, err := s.RevokeRequest(ctx, alice, r1.ID, "", at(5*time.Minute)); err != nil {
		t.Fatalf("RevokeRequest: %v", err)
	}
	check("r1 revoked", at(6*time.Minute))
	pol := testPolicy(t)
	pol.Rules = pol.Rules[:2]
	if _, err := s.SetPolicy(ctx, alice, "web-1", pol, at(7*time.Minute)); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	check("rules changed", at(8*time.Minute))
	_, _, _, err = s.AgentTargetChanges(ctx, "nope", p.TokenID, 1, at(8*time.Minute))
	wantErrIs(t, "AgentTargetChanges of no target", err, store.ErrNotFound)
}

func testEnroll(t *testing.T, s *store.Store) {
	ctx := t.Context()
	admin, err := s.CreateAdminToken(ctx, alice, "alice", t0)
	if err != nil {
		t.Fatalf("CreateAdminToken: %v", err)
	}
	tok := newTarget(t, s, "web-1", t0)
	addrs := []string{"192.0.2.5", "2001:db8::5"}

	_, _, err = s.Enroll(ctx, admin, addrs, "", "", t0)
	wantErrIs(t, "Enroll with an admin token", err, store.ErrUnauthorized)

	target, cred, err := s.Enroll(ctx, tok, addrs, "1.2.3", "192.0.2.5", at(time.Minute))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if target != "web-1" || cred == "" || cred == tok {
		t.Errorf("Enroll = %q, %q; want web-1 and a new credential", target, cred)
	}
	p, err := s.Authenticate(ctx, cred, at(1000*time.Hour))
	if err != nil || p.Kind != store.KindAgent || p.Subject != "web-1" {
		t.Errorf("agent credential = %+v, %v; want kind agent for web-1, without expiry", p, err)
	}
	_, _, err = s.Enroll(ctx, tok, addrs, "", "", at(2*time.Minute))
	wantErrIs(t, "second Enroll with the same token", err, store.ErrUnauthorized)
	_, err = s.Authenticate(ctx, tok, at(2*time.Minute))
	wantErrIs(t, "used enrollment token", err, store.ErrUnauthorized)
	_, _, err = s.Enroll(ctx, cred, addrs, "", "", at(2*time.Minute))
	wantErrIs(t, "Enroll with an agent credential", err, store.ErrUnauthorized)
	if _, err := s.Authenticate(ctx, cred, at(2*time.Minute)); err != nil {
		t.Errorf("credential after a refused re-enrollment: %v", err)
	}

	tg := mustTarget(t, s, "web-1")
	if diff := cmp.Diff(addrs, tg.Addresses); diff != "" || tg.AgentVersion != "1.2.3" {
		t.Errorf("target after enrollment: version %q, addresses (-want +got):\n%s", tg.AgentVersion, diff)
	}
	es, err := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.AgentEnrolled)})
	if err != nil || len(es) != 1 {
		t.Fatalf("agent.enrolled events = %v, %v; want 1", es, err)
	}
	if e := es[0]; e.Actor != "agent:web-1" || e.Target != "web-1" || e.ClientAddr != "192.0.2.5" || !e.At.Equal(at(time.Minute)) {
		t.Errorf("agent.enrolled event = %+v", e)
	}
}

func testSetPolicy(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if _, _, err := s.CreateTarget(ctx, alice, "web-1", nil, t0, enrollTTL); err != nil {
		t.Fatalf("CreateTarget: %v", err)
	}
	pol := testPolicy(t)
	changed, err := s.SetPolicy(ctx, alice, "web-1", pol, at(time.Minute))
	if err != nil || !changed {
		t.Fatalf("first SetPolicy = %v, %v; want true", changed, err)
	}
	tg := mustTarget(t, s, "web-1")
	if tg.Revision != 2 {
		t.Errorf("revision after SetPolicy = %d, want 2", tg.Revision)
	}
	if tg.Policy == nil {
		t.Fatal("policy not stored")
	}
	if diff := cmp.Diff(pol, *tg.Policy, cmpOpts); diff != "" {
		t.Errorf("stored policy (-want +got):\n%s", diff)
	}

	changed, err = s.SetPolicy(ctx, bob, "web-1", testPolicy(t), at(2*time.Minute))
	if err != nil || changed {
		t.Errorf("same SetPolicy again = %v, %v; want false", changed, err)
	}
	if rev := mustTarget(t, s, "web-1").Revision; rev != 2 {
		t.Errorf("revision after an idempotent SetPolicy = %d, want 2", rev)
	}

	pol.Rules = pol.Rules[:1]
	changed, err = s.SetPolicy(ctx, alice, "web-1", pol, at(3*time.Minute))
	if err != nil || !changed {
		t.Errorf("different SetPolicy = %v, %v; want true", changed, err)
	}
	if rev := mustTarget(t, s, "web-1").Revision; rev != 3 {
		t.Errorf("revision after a changed policy = %d, want 3", rev)
	}
	if _, err := s.SetPolicy(ctx, alice, "nope", pol, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetPolicy(nope): error = %v, want ErrNotFound", err)
	}

	if err := s.RemovePolicy(ctx, alice, "web-1", at(4*time.Minute)); err != nil {
		t.Fatalf("RemovePolicy: %v", err)
	}
	if tg := mustTarget(t, s, "web-1"); tg.Policy != nil || tg.Revision != 4 {
		t.Errorf("after RemovePolicy: policy %v, revision %d; want nil, 4", tg.Policy, tg.Revision)
	}
	wantErrIs(t, "RemovePolicy twice", s.RemovePolicy(ctx, alice, "web-1", at(5*time.Minute)), store.ErrNotFound)
	wantErrIs(t, "RemovePolicy(nope)", s.RemovePolicy(ctx, alice, "nope", at(5*time.Minute)), store.ErrNotFound)
	if rev := mustTarget(t, s, "web-1").Revision; rev != 4 {
		t.Errorf("revision after refused RemovePolicy = %d, want 4", rev)
	}
	wantTrail(t, s, store.AuditFilter{Target: "web-1"}, "target.added", "policy.set", "policy.set", "policy.removed")
}

func testCreateRequest(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	// A prefix with host bits is stored masked.
	r := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/28", 30*time.Minute, tcp(22), udp(53)), at(time.Minute))
	if !strings.HasPrefix(r.ID, "r-") {
		t.Errorf("request id %q lacks the r- prefix", r.ID)
	}
	want := store.Request{
		ID: r.ID, Target: "web-1", Requester: "alice", Source: pfx("198.51.100.0/28"), Ports: []policy.Port{tcp(22), udp(53)},
		Duration: 30 * time.Minute, Reason: "ticket-42", State: access.Pending, Revision: 3, CreatedAt: at(time.Minute),
		ExpiresAt: at(31 * time.Minute), ClientAddr: alice.ClientAddr,
		// Auto-approved at once: approved when asked, one version past insert.
		ApprovedAt: ptr(at(time.Minute)), Version: 2,
	}
	if diff := cmp.Diff(want, r, cmpOpts); diff != "" {
		t.Errorf("created request (-want +got):\n%s", diff)
	}
	if rev := mustTarget(t, s, "web-1").Revision; rev != r.Revision {
		t.Errorf("target revision %d, request revision %d; want equal", rev, r.Revision)
	}
	if got := mustGet(t, s, r.ID); !cmp.Equal(got, r, cmpOpts) {
		t.Errorf("GetRequest = %+v, want %+v", got, r)
	}
	_, err := s.GetRequest(ctx, "r-nope")
	wantErrIs(t, "GetRequest(r-nope)", err, store.ErrNotFound)

	// IPv6, and a second requester.
	r6 := mustRequest(t, s, bob, "web-1", ask("2001:db8::7/128", 30*time.Minute, tcp(22)), at(2*time.Minute))
	if r6.Revision != 4 || r6.Source != pfx("2001:db8::7/128") {
		t.Errorf("IPv6 request: revision %d, source %s; want 4, 2001:db8::7/128", r6.Revision, r6.Source)
	}
	wantGrants := []store.GrantRow{
		{Source: pfx("198.51.100.0/28"), Port: tcp(22), ExpiresAt: at(31 * time.Minute)},
		{Source: pfx("198.51.100.0/28"), Port: udp(53), ExpiresAt: at(31 * time.Minute)},
		{Source: pfx("2001:db8::7/128"), Port: tcp(22), ExpiresAt: at(32 * time.Minute)},
	}
	if diff := cmp.Diff(wantGrants, grants(t, s, "web-1", at(2*time.Minute)), cmpOpts); diff != "" {
		t.Errorf("grants (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		f    store.RequestFilter
		want int
	}{
		{store.RequestFilter{}, 2},
		{store.RequestFilter{Target: "web-1"}, 2},
		{store.RequestFilter{Target: "db-1"}, 0},
		{store.RequestFilter{Requester: "bob"}, 1},
		{store.RequestFilter{States: []access.State{access.Pending}}, 2},
		{store.RequestFilter{States: []access.State{access.Active, access.Revoked}}, 0},
		{store.RequestFilter{Limit: 1}, 1},
	} {
		if got := countRequests(t, s, tc.f); got != tc.want {
			t.Errorf("ListRequests(%+v) = %d requests, want %d", tc.f, got, tc.want)
		}
	}
	rs, err := s.ListRequests(ctx, store.RequestFilter{})
	if err != nil || len(rs) != 2 || rs[0].ID != r6.ID {
		t.Errorf("ListRequests is not newest first: %v, %v", rs, err)
	}
	if n, err := s.CountRequests(ctx, access.Pending); err != nil || n != 2 {
		t.Errorf("CountRequests(pending) = %d, %v; want 2", n, err)
	}
	es, err := s.ListAudit(ctx, store.AuditFilter{RequestID: r.ID})
	if err != nil || len(es) != 1 {
		t.Fatalf("events of %s = %v, %v; want 1", r.ID, es, err)
	}
	if e := es[0]; e.Action != audit.RequestCreated || e.Actor != "alice" || e.ClientAddr != alice.ClientAddr ||
		e.Target != "web-1" || e.Reason != "ticket-42" || !e.At.Equal(at(time.Minute)) {
		t.Errorf("request.created event = %+v", e)
	}
}

func testRefusals(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	if _, _, err := s.CreateTarget(ctx, alice, "bare-1", nil, t0, enrollTTL); err != nil {
		t.Fatalf("CreateTarget(bare-1): %v", err)
	}
	live := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)

	tests := []struct {
		name      string
		target    string
		req       policy.Request
		wantRule  string // for a *policy.DenyError
		wantField string // for a *policy.FieldError
	}{
		{"port not in policy", "web-1", ask("198.51.100.7/32", time.Hour, tcp(8080)), "8080/tcp", ""},
		{"source outside allowed", "web-1", ask("203.0.113.7/32", time.Hour, tcp(22)), "22/tcp", ""},
		{"source wider than allowed", "web-1", ask("198.51.0.0/16", time.Hour, tcp(22)), "22/tcp", ""},
		{"wrong family", "web-1", ask("2001:db8::1/128", time.Hour, udp(53)), "53/udp", ""},
		{"per-request source too wide", "web-1", ask("198.51.100.0/31", time.Hour, tcp(443)), "443/tcp", ""},
		{"duration above rule max", "web-1", ask("198.51.100.7/32", 2*time.Hour+time.Second, tcp(22)), "22/tcp", ""},
		{"second port refused", "web-1", ask("198.51.100.7/32", 45*time.Minute, tcp(22), udp(53)), "53/udp", ""},
		{"no policy", "bare-1", ask("198.51.100.7/32", time.Hour, tcp(22)), "", ""},
		{"no ports", "web-1", ask("198.51.100.7/32", time.Hour), "", "ports"},
		{"port twice", "web-1", ask("198.51.100.7/32", time.Hour, tcp(22), tcp(22)), "", "ports"},
		{"too short", "web-1", ask("198.51.100.7/32", time.Millisecond, tcp(22)), "", "duration"},
		{"negative", "web-1", ask("198.51.100.7/32", -time.Hour, tcp(22)), "", "duration"},
		{"invalid source", "web-1", policy.Request{Ports: []policy.Port{tcp(22)}, Duration: time.Hour}, "", "source"},
		{"reason too long", "web-1", policy.Request{Ports: []policy.Port{tcp(22)}, Source: pfx("198.51.100.7/32"), Duration: time.Hour,
			Reason: strings.Repeat("x", policy.MaxReasonLen+1)}, "", "reason"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			revs := map[string]int64{"web-1": mustTarget(t, s, "web-1").Revision, "bare-1": mustTarget(t, s, "bare-1").Revision}
			nreq := countRequests(t, s, store.RequestFilter{})
			before := trail(t, s, store.AuditFilter{})
			now := at(10 * time.Minute)

			r, err := s.CreateRequest(ctx, bob, tc.target, tc.req, policy.DefaultLimits(), now)
			if tc.wantField != "" {
				var fe *policy.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.wantField {
					t.Fatalf("error = %v (%T), want a *policy.FieldError for %s", err, err, tc.wantField)
				}
			} else {
				var de *policy.DenyError
				if !errors.As(err, &de) || de.Rule != tc.wantRule || de.Reason == "" {
					t.Fatalf("error = %v (%T), want a *policy.DenyError for rule %q", err, err, tc.wantRule)
				}
			}
			if r.ID != "" {
				t.Errorf("refusal returned request %+v", r)
			}
			for name, rev := range revs {
				if got := mustTarget(t, s, name).Revision; got != rev {
					t.Errorf("revision of %s went %d -> %d", name, rev, got)
				}
			}
			if got := countRequests(t, s, store.RequestFilter{}); got != nreq {
				t.Errorf("requests went %d -> %d", nreq, got)
			}
			if diff := cmp.Diff([]store.GrantRow{{Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(time.Hour)}},
				grants(t, s, "web-1", now), cmpOpts); diff != "" {
				t.Errorf("grants changed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(append(before, "request.refused"), trail(t, s, store.AuditFilter{})); diff != "" {
				t.Errorf("audit trail (-want +got):\n%s", diff)
			}
			es, err := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.RequestRefused)})
			if err != nil || len(es) == 0 {
				t.Fatalf("no request.refused event: %v", err)
			}
			if e := es[len(es)-1]; e.Actor != "bob" || e.Target != tc.target || e.ClientAddr != bob.ClientAddr || e.Details["error"] == nil {
				t.Errorf("request.refused event = %+v", e)
			}
		})
	}
	wantState(t, s, live.ID, access.Pending)

	nreq := countRequests(t, s, store.RequestFilter{})
	nev := len(trail(t, s, store.AuditFilter{}))
	_, err := s.CreateRequest(ctx, bob, "nope", ask("198.51.100.7/32", time.Hour, tcp(22)), policy.DefaultLimits(), t0)
	wantErrIs(t, "request for an unknown target", err, store.ErrNotFound)
	if countRequests(t, s, store.RequestFilter{}) != nreq || len(trail(t, s, store.AuditFilter{})) != nev {
		t.Error("a request for an unknown target changed requests or the audit trail")
	}
}

// testExtension: asking again for a live (requester, source, port) extends
// the grant, never shortens it, and supersedes requests left without grants.
func testExtension(t *testing.T, s *store.Store) {
	newTarget(t, s, "web-1", t0)
	src := "198.51.100.7/32"
	r1 := mustRequest(t, s, alice, "web-1", ask(src, time.Hour, tcp(22), tcp(443)), t0)
	mustReport(t, s, "web-1", r1.Revision, at(time.Second))

	// A shorter ask moves the grant but keeps its deadline; r1 keeps 443.
	r2 := mustRequest(t, s, alice, "web-1", ask(src, 30*time.Minute, tcp(22)), at(10*time.Minute))
	if diff := cmp.Diff([]policy.Port{tcp(22)}, r2.Extended); diff != "" {
		t.Errorf("r2.Extended (-want +got):\n%s", diff)
	}
	if !r2.ExpiresAt.Equal(at(time.Hour)) {
		t.Errorf("r2 expires %v, want %v (never shortened)", r2.ExpiresAt, at(time.Hour))
	}
	if r := wantState(t, s, r1.ID, access.Active); r.SupersededBy != "" || !r.ExpiresAt.Equal(at(time.Hour)) {
		t.Errorf("partially moved r1: superseded by %q, expires %v", r.SupersededBy, r.ExpiresAt)
	}
	want := []store.GrantRow{
		{Source: pfx(src), Port: tcp(22), ExpiresAt: at(time.Hour)},
		{Source: pfx(src), Port: tcp(443), ExpiresAt: at(time.Hour)},
	}
	if diff := cmp.Diff(want, grants(t, s, "web-1", at(10*time.Minute)), cmpOpts); diff != "" {
		t.Errorf("grants after r2 (-want +got):\n%s", diff)
	}

	// Moving 443 as well leaves r1 empty: superseded by r3.
	r3 := mustRequest(t, s, alice, "web-1", ask(src, time.Hour, tcp(443)), at(20*time.Minute))
	if !r3.ExpiresAt.Equal(at(80 * time.Minute)) {
		t.Errorf("r3 expires %v, want %v", r3.ExpiresAt, at(80*time.Minute))
	}
	r := wantState(t, s, r1.ID, access.Superseded)
	if r.SupersededBy != r3.ID || r.EndedAt == nil || !r.EndedAt.Equal(at(20*time.Minute)) || !strings.Contains(r.Message, r3.ID) {
		t.Errorf("superseded r1: by %q, ended %v, message %q; want %s at %v", r.SupersededBy, r.EndedAt, r.Message, r3.ID, at(20*time.Minute))
	}
	wantState(t, s, r2.ID, access.Pending)

	// A longer ask extends 22 and supersedes r2.
	r4 := mustRequest(t, s, alice, "web-1", ask(src, 2*time.Hour, tcp(22)), at(30*time.Minute))
	if !r4.ExpiresAt.Equal(at(150 * time.Minute)) {
		t.Errorf("r4 expires %v, want %v", r4.ExpiresAt, at(150*time.Minute))
	}
	if r := wantState(t, s, r2.ID, access.Superseded); r.SupersededBy != r4.ID {
		t.Errorf("r2 superseded by %q, want %s", r.SupersededBy, r4.ID)
	}

	// Another requester, or another source, is a grant of its own.
	rb := mustRequest(t, s, bob, "web-1", ask(src, time.Hour, tcp(22)), at(40*time.Minute))
	rs := mustRequest(t, s, alice, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(40*time.Minute))
	if len(rb.Extended) != 0 || len(rs.Extended) != 0 {
		t.Errorf("bob's or the other source's request extended %v / %v", rb.Extended, rs.Extended)
	}
	want = []store.GrantRow{
		{Source: pfx(src), Port: tcp(22), ExpiresAt: at(150 * time.Minute)},
		{Source: pfx(src), Port: tcp(443), ExpiresAt: at(80 * time.Minute)},
		{Source: pfx(src), Port: tcp(22), ExpiresAt: at(100 * time.Minute)},
		{Source: pfx("198.51.100.8/32"), Port: tcp(22), ExpiresAt: at(100 * time.Minute)},
	}
	if diff := cmp.Diff(want, grants(t, s, "web-1", at(40*time.Minute)), cmpOpts); diff != "" {
		t.Errorf("grants at the end (-want +got):\n%s", diff)
	}
	// The superseding request is created before the request it supersedes ends.
	wantTrail(t, s, store.AuditFilter{Target: "web-1", Since: at(time.Second)},
		"request.activated "+r1.ID,
		"request.created "+r2.ID,
		"request.created "+r3.ID, "request.superseded "+r1.ID,
		"request.created "+r4.ID, "request.superseded "+r2.ID,
		"request.created "+rb.ID, "request.created "+rs.ID)
}

func testDesiredState(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if _, _, err := s.CreateTarget(ctx, alice, "bare-1", nil, t0, enrollTTL); err != nil {
		t.Fatalf("CreateTarget: %v", err)
	}
	rev, pol, gs, err := s.DesiredState(ctx, "bare-1", t0)
	if err != nil || rev != 1 || pol != nil || len(gs) != 0 {
		t.Errorf("DesiredState of a target without policy = %d, %v, %v, %v; want 1, nil, none", rev, pol, gs, err)
	}
	_, _, _, err = s.DesiredState(ctx, "nope", t0)
	wantErrIs(t, "DesiredState(nope)", err, store.ErrNotFound)

	newTarget(t, s, "web-1", t0)
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustRequest(t, s, alice, "web-1", ask("198.51.100.8/32", 30*time.Minute, tcp(443)), t0)
	r3 := mustRequest(t, s, bob, "web-1", ask("198.51.100.9/32", time.Hour, tcp(22)), t0)
	if _, err := s.RevokeRequest(ctx, alice, r3.ID, "", at(time.Minute)); err != nil {
		t.Fatalf("RevokeRequest: %v", err)
	}
	rev, pol, gs, err = s.DesiredState(ctx, "web-1", at(29*time.Minute))
	if err != nil {
		t.Fatalf("DesiredState: %v", err)
	}
	if want := mustTarget(t, s, "web-1").Revision; rev != want {
		t.Errorf("revision = %d, want %d", rev, want)
	}
	if pol == nil || !pol.Equal(testPolicy(t)) {
		t.Errorf("policy = %+v, want the test policy", pol)
	}
	want := []store.GrantRow{
		{Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(time.Hour)},
		{Source: pfx("198.51.100.8/32"), Port: tcp(443), ExpiresAt: at(30 * time.Minute)},
	}
	if diff := cmp.Diff(want, gs, cmpOpts); diff != "" {
		t.Errorf("grants at +29m (-want +got):\n%s", diff)
	}
	// A grant whose deadline is now is over; no sweep is needed for that.
	if diff := cmp.Diff(want[:1], grants(t, s, "web-1", at(30*time.Minute)), cmpOpts); diff != "" {
		t.Errorf("grants at +30m (-want +got):\n%s", diff)
	}
	if gs := grants(t, s, "web-1", at(time.Hour)); len(gs) != 0 {
		t.Errorf("grants at +1h = %v, want none", gs)
	}
	wantState(t, s, r1.ID, access.Pending)
}

func testReportApplied(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	r2 := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(time.Second))

	got, err := s.ReportApplied(ctx, "web-1", r1.Revision, "", []string{"192.0.2.5"}, "1.0.0", at(2*time.Second))
	if err != nil {
		t.Fatalf("ReportApplied(%d): %v", r1.Revision, err)
	}
	if len(got) != 1 || got[0].ID != r1.ID || got[0].State != access.Active || got[0].ActivatedAt == nil || !got[0].ActivatedAt.Equal(at(2*time.Second)) {
		t.Errorf("activated = %+v, want only %s, active at %v", got, r1.ID, at(2*time.Second))
	}
	wantState(t, s, r2.ID, access.Pending)
	tg := mustTarget(t, s, "web-1")
	if tg.AppliedRevision != r1.Revision || tg.AgentSeenAt == nil || !tg.AgentSeenAt.Equal(at(2*time.Second)) ||
		tg.AgentVersion != "1.0.0" || !cmp.Equal(tg.Addresses, []string{"192.0.2.5"}) {
		t.Errorf("target after report: %+v", tg)
	}

	// Reporting the same revision again activates nothing new.
	if got := mustReport(t, s, "web-1", r1.Revision, at(3*time.Second)); len(got) != 0 {
		t.Errorf("repeated report activated %v", got)
	}
	if got := mustReport(t, s, "web-1", r2.Revision, at(4*time.Second)); len(got) != 1 || got[0].ID != r2.ID {
		t.Errorf("activated = %+v, want %s", got, r2.ID)
	}
	// An older revision does not move applied_revision back.
	mustReport(t, s, "web-1", r1.Revision, at(5*time.Second))
	if tg := mustTarget(t, s, "web-1"); tg.AppliedRevision != r2.Revision {
		t.Errorf("applied revision after an older report = %d, want %d", tg.AppliedRevision, r2.Revision)
	}

	// A revision the server never handed out is a conflict and changes nothing.
	before := mustTarget(t, s, "web-1")
	nev := len(trail(t, s, store.AuditFilter{}))
	_, err = s.ReportApplied(ctx, "web-1", before.Revision+1, "", []string{"192.0.2.99"}, "9.9.9", at(6*time.Second))
	wantErrIs(t, "report of a future revision", err, store.ErrConflict)
	if after := mustTarget(t, s, "web-1"); !cmp.Equal(before, after, cmpOpts) {
		t.Errorf("a refused report changed the target:\n%s", cmp.Diff(before, after, cmpOpts))
	}
	if n := len(trail(t, s, store.AuditFilter{})); n != nev {
		t.Errorf("a refused report added %d audit events", n-nev)
	}
	_, err = s.ReportApplied(ctx, "nope", 1, "", nil, "", t0)
	wantErrIs(t, "report for an unknown target", err, store.ErrNotFound)

	wantTrail(t, s, store.AuditFilter{Target: "web-1", Since: t0, Action: string(audit.RequestActivated)},
		"request.activated "+r1.ID, "request.activated "+r2.ID)
	es, _ := s.ListAudit(ctx, store.AuditFilter{RequestID: r1.ID, Action: string(audit.RequestActivated)})
	if len(es) != 1 || es[0].Actor != "agent:web-1" {
		t.Errorf("activation event = %+v, want one by agent:web-1", es)
	}
}

func testReportAppliedError(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustReport(t, s, "web-1", r1.Revision, at(time.Second))
	r2 := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(2*time.Second))
	r3 := mustRequest(t, s, bob, "web-1", ask("198.51.100.9/32", time.Hour, tcp(22)), at(3*time.Second))

	// The agent failed to apply r2's revision: r2 fails, r3 (newer) and r1
	// (already active) stay, and the revision moves on so the agent fetches
	// a state without r2's grant.
	const msg = "netlink: operation not permitted"
	got, err := s.ReportApplied(ctx, "web-1", r2.Revision, msg, nil, "", at(4*time.Second))
	if err != nil || len(got) != 0 {
		t.Fatalf("ReportApplied with an error = %v, %v; want nothing activated", got, err)
	}
	r := wantState(t, s, r2.ID, access.Failed)
	if !strings.Contains(r.Message, msg) || r.EndedAt == nil {
		t.Errorf("failed request: message %q, ended %v; want the agent's error", r.Message, r.EndedAt)
	}
	wantState(t, s, r1.ID, access.Active)
	wantState(t, s, r3.ID, access.Pending)
	tg := mustTarget(t, s, "web-1")
	// The kernel still holds r1's revision: applied_revision stays there.
	if tg.Revision != r3.Revision+1 || tg.AgentError != msg || tg.AppliedRevision != r1.Revision {
		t.Errorf("target after failed apply: revision %d (want %d), error %q, applied %d (want %d)",
			tg.Revision, r3.Revision+1, tg.AgentError, tg.AppliedRevision, r1.Revision)
	}
	want := []store.GrantRow{
		{Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(time.Hour)},
		{Source: pfx("198.51.100.9/32"), Port: tcp(22), ExpiresAt: at(time.Hour + 3*time.Second)},
	}
	if diff := cmp.Diff(want, grants(t, s, "web-1", at(4*time.Second)), cmpOpts); diff != "" {
		t.Errorf("grants after failed apply (-want +got):\n%s", diff)
	}

	// The same error again with nothing pending at that revision: no new
	// event, no new revision.
	before := tg.Revision
	if _, err := s.ReportApplied(ctx, "web-1", r2.Revision, msg, nil, "", at(5*time.Second)); err != nil {
		t.Fatalf("repeated error report: %v", err)
	}
	if rev := mustTarget(t, s, "web-1").Revision; rev != before {
		t.Errorf("repeated error report moved the revision %d -> %d", before, rev)
	}
	// Success clears the error and activates r3.
	if got := mustReport(t, s, "web-1", before, at(6*time.Second)); len(got) != 1 || got[0].ID != r3.ID {
		t.Errorf("activated = %+v, want %s", got, r3.ID)
	}
	if tg := mustTarget(t, s, "web-1"); tg.AgentError != "" {
		t.Errorf("agent error after a successful report = %q", tg.AgentError)
	}
	wantTrail(t, s, store.AuditFilter{Target: "web-1", Since: at(2 * time.Second)},
		"request.created "+r2.ID, "request.created "+r3.ID,
		"agent.apply_failed", "request.failed "+r2.ID,
		"request.activated "+r3.ID)
}

func testRevoke(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustReport(t, s, "web-1", r1.Revision, at(time.Second))
	rev := mustTarget(t, s, "web-1").Revision

	got, err := s.RevokeRequest(ctx, bob, r1.ID, "done", at(time.Minute))
	if err != nil {
		t.Fatalf("RevokeRequest: %v", err)
	}
	if got.State != access.Revoked || got.Message != "revoked by bob: done" || got.EndedAt == nil || !got.EndedAt.Equal(at(time.Minute)) {
		t.Errorf("revoked request = state %s, message %q, ended %v", got.State, got.Message, got.EndedAt)
	}
	if r := mustTarget(t, s, "web-1").Revision; r != rev+1 {
		t.Errorf("revision after revoke = %d, want %d", r, rev+1)
	}
	if gs := grants(t, s, "web-1", at(time.Minute)); len(gs) != 0 {
		t.Errorf("grants after revoke = %v, want none", gs)
	}
	_, err = s.RevokeRequest(ctx, bob, r1.ID, "again", at(2*time.Minute))
	wantErrIs(t, "second revoke", err, store.ErrConflict)
	_, err = s.RevokeRequest(ctx, bob, "r-nope", "", at(2*time.Minute))
	wantErrIs(t, "revoke of an unknown request", err, store.ErrNotFound)
	if r := mustTarget(t, s, "web-1").Revision; r != rev+1 {
		t.Errorf("refused revokes moved the revision to %d", r)
	}

	// A revoked pending request stays revoked when its revision is applied.
	r2 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(3*time.Minute))
	if _, err := s.RevokeRequest(ctx, alice, r2.ID, "", at(4*time.Minute)); err != nil {
		t.Fatalf("RevokeRequest(pending): %v", err)
	}
	if got := mustReport(t, s, "web-1", r2.Revision, at(5*time.Second)); len(got) != 0 {
		t.Errorf("report activated revoked requests %v", got)
	}
	if r := wantState(t, s, r2.ID, access.Revoked); r.Message != "revoked by alice" {
		t.Errorf("message without a reason = %q", r.Message)
	}

	// Revoking a request that was extended revokes the request that holds
	// its grant now: revocation wins the race with extension.
	r3 := mustRequest(t, s, alice, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(6*time.Minute))
	r4 := mustRequest(t, s, alice, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(7*time.Minute))
	wantState(t, s, r3.ID, access.Superseded)
	if _, err := s.RevokeRequest(ctx, alice, r3.ID, "", at(8*time.Minute)); err != nil {
		t.Fatalf("revoke of a superseded request: %v", err)
	}
	wantState(t, s, r4.ID, access.Revoked)
	for _, g := range grants(t, s, "web-1", at(8*time.Minute)) {
		if g.Source == pfx("198.51.100.8/32") {
			t.Errorf("grant %v survived the revocation of the request it extended", g)
		}
	}
	_, err = s.RevokeRequest(ctx, alice, r3.ID, "", at(9*time.Minute))
	wantErrIs(t, "second revoke through the chain", err, store.ErrConflict)

	// An extension that took over only some of the ports carries them: r5
	// keeps 443 (still live), r6 took 22. Revoking r5 ends r6 as well, or
	// 22 stayed open while the revocation of r5 said its ports closed.
	r5 := mustRequest(t, s, alice, "web-1", ask("198.51.100.9/32", time.Hour, tcp(22), tcp(443)), at(10*time.Minute))
	r6 := mustRequest(t, s, alice, "web-1", ask("198.51.100.9/32", time.Hour, tcp(22)), at(11*time.Minute))
	// A request of the same requester and source that took nothing of r5's
	// is not touched.
	r7 := mustRequest(t, s, alice, "web-1", ask("198.51.100.9/32", 30*time.Minute, udp(53)), at(11*time.Minute))
	wantState(t, s, r5.ID, access.Pending)
	got, err = s.RevokeRequest(ctx, bob, r5.ID, "partial", at(12*time.Minute))
	if err != nil || got.ID != r5.ID || got.State != access.Revoked {
		t.Fatalf("revoke of a partly extended request = %s %s, %v; want %s revoked", got.ID, got.State, err, r5.ID)
	}
	if r := wantState(t, s, r6.ID, access.Revoked); r.Removal == nil || got.Removal == nil || r.Removal.Revision != got.Removal.Revision {
		t.Errorf("carrier r6: removal %+v, want the same as r5's %+v", r.Removal, got.Removal)
	} else if !got.Removal.Deadline.Equal(r.ExpiresAt) {
		// 22 stays in the kernel until r6's (extended) deadline.
		t.Errorf("r5's removal deadline = %v, want r6's %v", got.Removal.Deadline, r.ExpiresAt)
	}
	wantState(t, s, r7.ID, access.Pending)
	for _, g := range grants(t, s, "web-1", at(12*time.Minute)) {
		if g.Source == pfx("198.51.100.9/32") && g.Port != udp(53) {
			t.Errorf("grant %v survived the revocation of the request it came from", g)
		}
	}
	// Revoking a fully superseded request returns the request that carried
	// its grant, whose removal closes the port.
	r8 := mustRequest(t, s, alice, "web-1", ask("198.51.100.10/32", time.Hour, tcp(22)), at(13*time.Minute))
	r9 := mustRequest(t, s, alice, "web-1", ask("198.51.100.10/32", time.Hour, tcp(22)), at(14*time.Minute))
	wantState(t, s, r8.ID, access.Superseded)
	got, err = s.RevokeRequest(ctx, bob, r8.ID, "", at(15*time.Minute))
	if err != nil || got.ID != r9.ID || got.State != access.Revoked || got.Removal == nil {
		t.Errorf("revoke of a superseded request returned %s %s removal %+v, %v; want %s revoked with its removal", got.ID, got.State, got.Removal, err, r9.ID)
	}

	wantTrail(t, s, store.AuditFilter{RequestID: r1.ID},
		"request.created "+r1.ID, "request.activated "+r1.ID, "request.revoked "+r1.ID)
	es, _ := s.ListAudit(ctx, store.AuditFilter{RequestID: r1.ID, Action: string(audit.RequestRevoked)})
	if len(es) != 1 || es[0].Actor != "bob" || es[0].ClientAddr != bob.ClientAddr {
		t.Errorf("revocation event = %+v, want one by bob", es)
	}
}

func testSweep(t *testing.T, s *store.Store) {
	ctx := t.Context()
	sweep := func(now time.Time) time.Time {
		t.Helper()
		next, err := s.Sweep(ctx, now, activation)
		if err != nil {
			t.Fatalf("Sweep(%v): %v", now, err)
		}
		return next
	}
	if next := sweep(t0); !next.IsZero() {
		t.Errorf("Sweep of an empty store: next = %v, want zero", next)
	}
	newTarget(t, s, "web-1", t0)
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustReport(t, s, "web-1", r1.Revision, at(time.Second))
	r2 := mustRequest(t, s, bob, "web-1", ask("198.51.100.8/32", 30*time.Minute, tcp(22)), at(10*time.Minute))

	if next := sweep(at(5 * time.Minute)); !next.Equal(at(10*time.Minute + activation)) {
		t.Errorf("next after the first sweep = %v, want r2's activation deadline %v", next, at(10*time.Minute+activation))
	}
	wantState(t, s, r1.ID, access.Active)
	wantState(t, s, r2.ID, access.Pending)

	// Just before the activation deadline nothing happens.
	sweep(at(10*time.Minute + activation - time.Millisecond))
	wantState(t, s, r2.ID, access.Pending)

	rev := mustTarget(t, s, "web-1").Revision
	if next := sweep(at(10*time.Minute + activation)); !next.Equal(at(time.Hour)) {
		t.Errorf("next after the activation timeout = %v, want r1's deadline %v", next, at(time.Hour))
	}
	r := wantState(t, s, r2.ID, access.Failed)
	if !strings.Contains(r.Message, "web-1") || !strings.Contains(r.Message, activation.String()) {
		t.Errorf("timeout message %q does not name the target and the timeout", r.Message)
	}
	if got := mustTarget(t, s, "web-1").Revision; got != rev+1 {
		t.Errorf("revision after the activation timeout = %d, want %d", got, rev+1)
	}
	if diff := cmp.Diff([]store.GrantRow{{Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(time.Hour)}},
		grants(t, s, "web-1", at(13*time.Minute)), cmpOpts); diff != "" {
		t.Errorf("grants after the timeout (-want +got):\n%s", diff)
	}

	sweep(at(time.Hour - time.Millisecond))
	wantState(t, s, r1.ID, access.Active)
	if next := sweep(at(time.Hour)); !next.IsZero() {
		t.Errorf("next after everything ended = %v, want zero", next)
	}
	if r := wantState(t, s, r1.ID, access.Expired); r.EndedAt == nil || !r.EndedAt.Equal(at(time.Hour)) {
		t.Errorf("expired request ended %v, want %v", r.EndedAt, at(time.Hour))
	}
	// Sweeping again is a no-op.
	nev := len(trail(t, s, store.AuditFilter{}))
	sweep(at(2 * time.Hour))
	if n := len(trail(t, s, store.AuditFilter{})); n != nev {
		t.Errorf("a second sweep added %d audit events", n-nev)
	}

	wantTrail(t, s, store.AuditFilter{Target: "web-1"},
		"target.added", "policy.set",
		"request.created "+r1.ID, "request.activated "+r1.ID,
		"request.created "+r2.ID, "request.failed "+r2.ID,
		"request.expired "+r1.ID)
	es, _ := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.RequestExpired)})
	if len(es) != 1 || es[0].Actor != audit.System || !es[0].At.Equal(at(time.Hour)) {
		t.Errorf("expiry event = %+v, want one by %s at %v", es, audit.System, at(time.Hour))
	}
}

func testSweepPendingPastDeadline(t *testing.T, s *store.Store) {
	newTarget(t, s, "web-1", t0)
	r := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", 10*time.Second, tcp(22)), t0)
	next, err := s.Sweep(t.Context(), t0, activation)
	if err != nil || !next.Equal(at(10*time.Second)) {
		t.Errorf("Sweep = %v, %v; want the request's deadline %v, which comes before its activation deadline", next, err, at(10*time.Second))
	}
	if _, err := s.Sweep(t.Context(), at(10*time.Second), activation); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if r := wantState(t, s, r.ID, access.Failed); r.Message == "" {
		t.Error("a pending request that ran out failed without a message")
	}
	if mustReport(t, s, "web-1", r.Revision, at(11*time.Second)); wantState(t, s, r.ID, access.Failed).ActivatedAt != nil {
		t.Error("a late report activated a failed request")
	}
}

func testListAudit(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)                                                                           // 1 target.added, 2 policy.set
	newTarget(t, s, "db-1", at(time.Minute))                                                               // 3, 4
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(2*time.Minute)) // 5
	r2 := mustRequest(t, s, bob, "db-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(3*time.Minute))    // 6
	mustReport(t, s, "web-1", r1.Revision, at(4*time.Minute))                                              // 7
	if _, err := s.RevokeRequest(ctx, alice, r1.ID, "", at(5*time.Minute)); err != nil {                   // 8
		t.Fatal(err)
	}

	all, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(all) != 8 {
		t.Fatalf("ListAudit() = %d events, %v; want 8", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID || all[i].At.Before(all[i-1].At) {
			t.Errorf("events %d and %d are not oldest first: %+v, %+v", i-1, i, all[i-1], all[i])
		}
	}
	wantTrail(t, s, store.AuditFilter{Target: "db-1"}, "target.added", "policy.set", "request.created "+r2.ID)
	wantTrail(t, s, store.AuditFilter{RequestID: r1.ID}, "request.created "+r1.ID, "request.activated "+r1.ID, "request.revoked "+r1.ID)
	wantTrail(t, s, store.AuditFilter{Action: "request.created"}, "request.created "+r1.ID, "request.created "+r2.ID)
	wantTrail(t, s, store.AuditFilter{Since: at(4 * time.Minute)}, "request.activated "+r1.ID, "request.revoked "+r1.ID)
	wantTrail(t, s, store.AuditFilter{AfterID: all[5].ID}, "request.activated "+r1.ID, "request.revoked "+r1.ID)
	wantTrail(t, s, store.AuditFilter{Limit: 2}, "target.added", "policy.set")
	wantTrail(t, s, store.AuditFilter{Target: "web-1", Action: "policy.set"}, "policy.set")
	wantTrail(t, s, store.AuditFilter{Target: "web-1", AfterID: all[1].ID, Limit: 1}, "request.created "+r1.ID)
	wantTrail(t, s, store.AuditFilter{Target: "nope"})
	wantTrail(t, s, store.AuditFilter{Since: at(time.Hour)})

	// Audit records an event on its own; details survive the round trip.
	if err := s.Audit(ctx, audit.Event{At: at(6 * time.Minute), Actor: "alice", Action: audit.RequestRefused, Target: "web-1",
		Reason: "why", Details: map[string]any{"k": "v"}}); err != nil {
		t.Fatalf("Audit: %v", err)
	}
	es, err := s.ListAudit(ctx, store.AuditFilter{AfterID: all[7].ID})
	if err != nil || len(es) != 1 {
		t.Fatalf("ListAudit after Audit = %v, %v", es, err)
	}
	want := audit.Event{ID: es[0].ID, At: at(6 * time.Minute), Actor: "alice", Action: audit.RequestRefused, Target: "web-1",
		Reason: "why", Details: map[string]any{"k": "v"}}
	if diff := cmp.Diff(want, es[0]); diff != "" {
		t.Errorf("audit event round trip (-want +got):\n%s", diff)
	}
}

// testOnChange: the store's change feed tells its subscriber about every
// committed change of a target's desired state, and only after the commit.
func testOnChange(t *testing.T, s *store.Store) {
	ctx := t.Context()
	var (
		mu   sync.Mutex
		seen []string
	)
	s.Subscribe(func(targets ...string) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, targets...)
	})
	took := func(what string, want ...string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff(want, seen, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("change feed after %s (-want +got):\n%s", what, diff)
		}
		seen = nil
	}
	tok := newTarget(t, s, "web-1", t0)
	took("create and set policy", "web-1")
	if _, err := s.SetPolicy(ctx, alice, "web-1", testPolicy(t), t0); err != nil {
		t.Fatal(err)
	}
	took("an unchanged policy")
	if _, _, err := s.Enroll(ctx, tok, nil, "", "", t0); err != nil {
		t.Fatal(err)
	}
	took("enroll")
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	took("CreateRequest", "web-1")
	s.CreateRequest(ctx, alice, "web-1", ask("203.0.113.1/32", time.Hour, tcp(22)), policy.DefaultLimits(), t0)
	took("a refused request")
	mustReport(t, s, "web-1", r1.Revision, t0)
	took("a successful report")
	r2 := mustRequest(t, s, alice, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), t0)
	took("CreateRequest", "web-1")
	if _, err := s.ReportApplied(ctx, "web-1", r2.Revision, "boom", nil, "", t0); err != nil {
		t.Fatal(err)
	}
	took("a failed apply", "web-1")
	if _, err := s.RevokeRequest(ctx, alice, r1.ID, "", t0); err != nil {
		t.Fatal(err)
	}
	took("RevokeRequest", "web-1")
	mustRequest(t, s, alice, "web-1", ask("198.51.100.9/32", time.Hour, tcp(22)), t0)
	took("CreateRequest", "web-1")
	if _, err := s.Sweep(ctx, at(activation), activation); err != nil {
		t.Fatal(err)
	}
	took("an activation timeout", "web-1")
	if err := s.RemovePolicy(ctx, alice, "web-1", t0); err != nil {
		t.Fatal(err)
	}
	took("RemovePolicy", "web-1")
	if err := s.RemoveTarget(ctx, alice, "web-1", t0); err != nil {
		t.Fatal(err)
	}
	took("RemoveTarget", "web-1")
}

// testConcurrentRequests: requests created at once, for several targets, all
// succeed and are all recorded, each with a revision of its own.
func testConcurrentRequests(t *testing.T, s *store.Store) {
	const targets, n = 4, 20
	for i := range targets {
		newTarget(t, s, fmt.Sprintf("web-%d", i), t0)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			target := fmt.Sprintf("web-%d", i%targets)
			port := []policy.Port{tcp(22), tcp(443)}[i%2]
			req := ask(fmt.Sprintf("198.51.100.%d/32", i+1), time.Hour, port)
			if _, err := s.CreateRequest(t.Context(), alice, target, req, policy.DefaultLimits(), at(time.Duration(i)*time.Millisecond)); err != nil {
				errs <- fmt.Errorf("request %d for %s: %w", i, target, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for i := range targets {
		name := fmt.Sprintf("web-%d", i)
		rs, err := s.ListRequests(t.Context(), store.RequestFilter{Target: name})
		if err != nil {
			t.Fatal(err)
		}
		total += len(rs)
		revs := map[int64]bool{}
		for _, r := range rs {
			revs[r.Revision] = true
		}
		if len(revs) != len(rs) {
			t.Errorf("%s: %d requests share %d revisions", name, len(rs), len(revs))
		}
		if tg := mustTarget(t, s, name); tg.Revision != int64(2+len(rs)) {
			t.Errorf("%s: revision %d after %d requests, want %d", name, tg.Revision, len(rs), 2+len(rs))
		}
		if gs := grants(t, s, name, at(time.Second)); len(gs) != len(rs) {
			t.Errorf("%s: %d grants for %d requests", name, len(gs), len(rs))
		}
	}
	if total != n {
		t.Errorf("recorded %d requests, want %d", total, n)
	}
	if got := len(trail(t, s, store.AuditFilter{Action: "request.created"})); got != n {
		t.Errorf("%d request.created events, want %d", got, n)
	}
}

// testConcurrentExtension: the same grant asked for many times at once ends
// up as one grant held by exactly one live request.
func testConcurrentExtension(t *testing.T, s *store.Store) {
	const n = 20
	newTarget(t, s, "web-1", t0)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			req := ask("198.51.100.7/32", time.Duration(i+1)*time.Minute, tcp(22))
			if _, err := s.CreateRequest(t.Context(), alice, "web-1", req, policy.DefaultLimits(), t0); err != nil {
				errs <- fmt.Errorf("request %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if diff := cmp.Diff([]store.GrantRow{{Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(n * time.Minute)}},
		grants(t, s, "web-1", t0), cmpOpts); diff != "" {
		t.Errorf("grants (-want +got):\n%s", diff)
	}
	live := countRequests(t, s, store.RequestFilter{States: []access.State{access.Pending, access.Active}})
	superseded := countRequests(t, s, store.RequestFilter{States: []access.State{access.Superseded}})
	if live != 1 || superseded != n-1 {
		t.Errorf("%d live and %d superseded requests, want 1 and %d", live, superseded, n-1)
	}
}

// testConcurrentEnroll: an enrollment token used many times at once yields
// exactly one credential.
func testConcurrentEnroll(t *testing.T, s *store.Store) {
	const n = 10
	tok := newTarget(t, s, "web-1", t0)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		creds []string
		other []error
	)
	for range n {
		wg.Go(func() {
			_, cred, err := s.Enroll(t.Context(), tok, nil, "", "", t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				creds = append(creds, cred)
			case !errors.Is(err, store.ErrUnauthorized):
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	if len(creds) != 1 || len(other) != 0 {
		t.Fatalf("concurrent enrollments: %d credentials, unexpected errors %v; want exactly one credential", len(creds), other)
	}
	if n, err := s.CountTokens(t.Context(), store.KindAgent); err != nil || n != 1 {
		t.Errorf("agent tokens = %d, %v; want 1", n, err)
	}
	if _, err := s.Authenticate(t.Context(), creds[0], t0); err != nil {
		t.Errorf("the credential does not authenticate: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
