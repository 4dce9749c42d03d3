package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy/policytest"
	"github.com/jitgate/jitgate/internal/policyfile"
	"github.com/jitgate/jitgate/internal/wire"
)

// snapshot is what a change to a target's policy would move: its policy,
// its revision (what agents apply) and its policy audit events.
type snapshot struct {
	policy   *wire.Policy
	revision int64
	events   int
}

func (e *env) snapshot(t *testing.T, target string) snapshot {
	t.Helper()
	ctx := context.Background()
	tg, err := e.c.Target(ctx, target)
	if err != nil {
		t.Fatalf("Target %s: %v", target, err)
	}
	ev, err := e.c.Audit(ctx, client.AuditFilter{Target: target})
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	n := 0
	for _, x := range ev {
		if strings.HasPrefix(x.Action, "policy.") {
			n++
		}
	}
	return snapshot{policy: tg.Policy, revision: tg.Agent.Revision, events: n}
}

// unchanged fails unless target is as before.
func (e *env) unchanged(t *testing.T, target string, before snapshot) {
	t.Helper()
	after := e.snapshot(t, target)
	if diff := cmp.Diff(before, after, cmp.AllowUnexported(snapshot{})); diff != "" {
		t.Errorf("%s changed (-before +after):\n%s", target, diff)
	}
}

func summaries(cs []wire.PolicyChange) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Summary)
	}
	return out
}

// TestEnableDefaultSkips checks that enabling the default policy in bulk
// never overwrites a target's own policy, skips unsupported targets, says
// why for each, and that its dry run changes nothing.
func TestEnableDefaultSkips(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mk := func(name string, inv *wire.Inventory) {
		ag := e.createEnrolled(t, wire.TargetCreate{Name: name, Labels: map[string]string{"group": "prod"}})
		if err := ag.Report(ctx, wire.AgentReport{Revision: 0, Mode: "host", Inventory: inv}); err != nil {
			t.Fatal(err)
		}
	}
	mk("web-01", &wire.Inventory{CanEnforce: true})
	mk("web-02", &wire.Inventory{CanEnforce: true})
	mk("old-01", &wire.Inventory{CanEnforce: false, Reason: "running without CAP_NET_ADMIN"})
	own := wire.Policy{Rules: []wire.PortRule{{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(30 * time.Minute),
		AllowedSources: []string{"198.51.100.0/24"}, Approval: &wire.Approval{Mode: "manual", Approvals: 2}, CloseEstablished: true}}}
	e.setPolicy(t, "web-02", own)

	wantSkipped := []wire.PolicySkip{
		{Target: "old-01", Reason: "unsupported: running without CAP_NET_ADMIN"},
		{Target: "web-02", Reason: "already has a policy (22/tcp); change it with policy set or apply"},
	}
	check := func(res wire.PolicyEnableResult, dry bool) {
		t.Helper()
		if res.DryRun != dry || len(res.Enabled) != 1 || res.Enabled[0].Target != "web-01" || !res.Enabled[0].Changed ||
			res.Enabled[0].DryRun != dry || len(res.Enabled[0].Policy.Rules) != 4 {
			t.Errorf("enabled = %+v, want web-01 with the default policy (dry run %v)", res.Enabled, dry)
		}
		got := slices.Clone(res.Skipped)
		slices.SortFunc(got, func(a, b wire.PolicySkip) int { return strings.Compare(a.Target, b.Target) })
		if diff := cmp.Diff(wantSkipped, got); diff != "" {
			t.Errorf("skipped (-want +got):\n%s", diff)
		}
	}

	before := map[string]snapshot{}
	for _, n := range []string{"web-01", "web-02", "old-01"} {
		before[n] = e.snapshot(t, n)
	}
	res, err := e.c.EnablePolicy(ctx, "group=prod", true)
	if err != nil {
		t.Fatalf("enable --dry-run: %v", err)
	}
	check(res, true)
	for n, b := range before {
		e.unchanged(t, n, b)
	}

	res, err = e.c.EnablePolicy(ctx, "group=prod", false)
	if err != nil {
		t.Fatalf("enable: %v", err)
	}
	check(res, false)
	e.unchanged(t, "web-02", before["web-02"])
	e.unchanged(t, "old-01", before["old-01"])
	if p, err := e.c.Policy(ctx, "web-01"); err != nil || len(p.Rules) != 4 {
		t.Errorf("web-01 after enable: %v %+v", err, p)
	}
}

// TestSetPolicyDryRunAndDropped checks that setting a policy names the
// ports it stops gating and every weakened setting, and that a dry run
// says so and changes nothing.
func TestSetPolicyDryRunAndDropped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	manual := &wire.Approval{Mode: "manual", Approvals: 1}
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Approval: manual, CloseEstablished: true, AllowedSources: []string{"198.51.100.0/24"}},
		{Port: 3389, Approval: manual}, {Port: 53, Protocol: "udp", Approval: manual},
	}})
	next := wire.Policy{Rules: []wire.PortRule{{Port: 22, AllowedSources: []string{"198.51.0.0/16"}}}}
	wantChanges := []string{
		"22/tcp allowed_sources: 198.51.100.0/24 -> 198.51.0.0/16 (weaker)",
		"22/tcp approval: manual (1 approval) -> auto (weaker)",
		"22/tcp close_established: on -> off (weaker)",
		"3389/tcp: rule dropped: the port is no longer gated (weaker)",
		"53/udp: rule dropped: the port is no longer gated (weaker)",
	}
	wantDropped := []string{"3389/tcp", "53/udp"}

	before := e.snapshot(t, "web-01")
	plan, err := e.c.PlanPolicy(ctx, "web-01", next)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if !plan.DryRun || !plan.Changed {
		t.Errorf("dry run result %+v, want dry_run and changed", plan)
	}
	if diff := cmp.Diff(wantChanges, summaries(plan.Changes)); diff != "" {
		t.Errorf("dry run changes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantDropped, plan.Dropped); diff != "" {
		t.Errorf("dry run dropped (-want +got):\n%s", diff)
	}
	e.unchanged(t, "web-01", before)

	// A dry run still runs every check: a published port on a target not
	// behind a gateway is refused, and nothing changes.
	_, err = e.c.PlanPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}}})
	if client.StatusOf(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "not behind a gateway") {
		t.Errorf("dry run of an impossible policy: %v, want 422", err)
	}
	if code, body := e.raw(t, http.MethodPut, "/api/v1/targets/web-01/policy?dry_run=maybe", e.admin, "application/json",
		strings.NewReader(`{"rules":[{"port":22}]}`)); code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "dry_run") {
		t.Errorf("dry_run=maybe: %d %s, want 422 naming dry_run", code, body)
	}
	e.unchanged(t, "web-01", before)

	res, err := e.c.SetPolicy(ctx, "web-01", next)
	if err != nil {
		t.Fatal(err)
	}
	if res.DryRun || !res.Changed {
		t.Errorf("result %+v, want changed", res)
	}
	if diff := cmp.Diff(wantChanges, summaries(res.Changes)); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantDropped, res.Dropped); diff != "" {
		t.Errorf("dropped (-want +got):\n%s", diff)
	}
	if after := e.snapshot(t, "web-01"); after.revision == before.revision || after.events != before.events+1 {
		t.Errorf("set: revision %d -> %d, policy events %d -> %d", before.revision, after.revision, before.events, after.events)
	}
	// The audit trail names the weakened settings too.
	ev, err := e.c.Audit(ctx, client.AuditFilter{Target: "web-01", Action: "policy.set"})
	if err != nil || len(ev) == 0 {
		t.Fatalf("policy.set events: %v %v", ev, err)
	}
	last := ev[0]
	for _, x := range ev {
		if x.ID > last.ID {
			last = x
		}
	}
	var weakened []string
	if w, ok := last.Details["weakened"].([]any); ok {
		for _, s := range w {
			weakened = append(weakened, s.(string))
		}
	}
	if diff := cmp.Diff(wantChanges, weakened); diff != "" {
		t.Errorf("audit details weakened (-want +got):\n%s", diff)
	}
}

// TestExportAppliesBackUnchanged sets a policy with every setting through
// the API, exports it as a policy file, applies the file, and checks that
// the server reports no change and holds the identical policy.
func TestExportAppliesBackUnchanged(t *testing.T) {
	e, _ := gatewayEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "app-01", Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	full := wire.PortRule{Port: 22, Protocol: "tcp", AllowedSources: []string{"198.51.100.0/24", "203.0.113.7/32"},
		MaxDuration: wire.Duration(90 * time.Minute), Approval: &wire.Approval{Mode: "manual", Approvals: 2},
		Justification:    &wire.Justification{Required: true, MinLength: 12, Pattern: `^(INC|CHG)-[0-9]+`},
		CloseEstablished: true, Publish: true, MappedPort: 20022, Access: "both", IdleTimeout: wire.Duration(15 * time.Minute),
		Logins: []string{"ubuntu", "deploy"}, Windows: []string{"Mon-Fri 08:00-18:00 Europe/Berlin"},
		Approvals: []wire.GroupApproval{{From: "group:dba", Count: 1}, {From: "group:security", Count: 1}}}
	recorded := wire.PortRule{Port: 2222, Access: "bastion", Record: true, RecordInput: true}
	if z := policytest.ZeroFieldsOfAll(full, recorded); len(z) > 0 {
		t.Fatalf("the full and recorded rules leave %v unset: set every field of wire.PortRule", z)
	}
	e.setPolicy(t, "app-01", wire.Policy{Rules: []wire.PortRule{full, recorded, {Port: 3389, Publish: true}, {Port: 53, Protocol: "udp"}}})

	before := e.snapshot(t, "app-01")
	gwBefore := e.snapshot(t, "gw-1")
	shown, err := e.c.Policy(ctx, "app-01")
	if err != nil {
		t.Fatal(err)
	}
	p, err := policyfile.FromWire("app-01", shown)
	if err != nil {
		t.Fatal(err)
	}
	var file strings.Builder
	if err := (policyfile.File{Policies: []policyfile.Policy{p}}).Encode(&file); err != nil {
		t.Fatal(err)
	}
	f, err := policyfile.Parse(strings.NewReader(file.String()))
	if err != nil {
		t.Fatalf("parsing the export: %v\n%s", err, file.String())
	}
	res, err := e.c.SetPolicy(ctx, "app-01", f.Policies[0].Wire())
	if err != nil {
		t.Fatalf("applying the export: %v\n%s", err, file.String())
	}
	if res.Changed || len(res.Changes) != 0 {
		t.Errorf("applying the export changed %v:\n%s", summaries(res.Changes), file.String())
	}
	e.unchanged(t, "app-01", before)
	e.unchanged(t, "gw-1", gwBefore)
}
