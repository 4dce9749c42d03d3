package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestPolicyEditorsCannotOverwriteEachOther: two editors read the same
// policy; the first to save wins, the second is refused with 412 and the
// first one's change stays. A PUT naming no policy is refused with 428.
// On PostgreSQL too: the policy read back from there (its JSON stored and
// decoded again) has the ETag its PUT answered.
func TestPolicyEditorsCannotOverwriteEachOther(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { policyEditors(t, newEnv(t)) })
	t.Run("postgres", func(t *testing.T) { policyEditors(t, newPostgresEnv(t)) })
}

func policyEditors(t *testing.T, e *env) {
	ctx := context.Background()
	e.addTarget(t, "web-01", "198.51.100.10")
	anna, ben := e.c, e.c.WithToken(e.approverEverywhere(t, "ben"))
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:ben", Role: authz.PolicyAdmin, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}

	// No policy yet: both see none, and only one can create it.
	if _, _, err := anna.PolicyETag(ctx, "web-01"); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("PolicyETag before any policy: %v, want 404", err)
	}
	first, err := anna.SetPolicyIf(ctx, "web-01", sshPolicy("198.51.100.0/24"), "")
	if err != nil || first.ETag == "" {
		t.Fatalf("anna creates the policy: %+v %v", first, err)
	}
	if _, err := ben.SetPolicyIf(ctx, "web-01", sshPolicy("0.0.0.0/0"), ""); client.StatusOf(err) != http.StatusPreconditionFailed {
		t.Fatalf("ben creates it too: %v, want 412", err)
	}

	// Both read the same version and edit it.
	_, tagA, err := anna.PolicyETag(ctx, "web-01")
	if err != nil || tagA != first.ETag {
		t.Fatalf("anna reads ETag %q (%v), want the one her PUT answered, %q", tagA, err, first.ETag)
	}
	_, tagB, _ := ben.PolicyETag(ctx, "web-01")
	if tagB != tagA {
		t.Fatalf("the same policy has two ETags: %q %q", tagA, tagB)
	}
	tgt, err := anna.Target(ctx, "web-01")
	if err != nil || tgt.PolicyETag != tagA {
		t.Errorf("target's policy_etag %q (%v), want %q", tgt.PolicyETag, err, tagA)
	}
	annas := sshPolicy("198.51.100.0/24", "203.0.113.0/24")
	saved, err := anna.SetPolicyIf(ctx, "web-01", annas, tagA)
	if err != nil || !saved.Changed || saved.ETag == tagA {
		t.Fatalf("anna saves: %+v %v", saved, err)
	}
	_, err = ben.SetPolicyIf(ctx, "web-01", sshPolicy("0.0.0.0/0"), tagB)
	if client.StatusOf(err) != http.StatusPreconditionFailed || !strings.Contains(err.Error(), "changed since you read it") {
		t.Fatalf("ben saves over anna's change: %v, want 412 saying it changed", err)
	}
	got, _, err := anna.PolicyETag(ctx, "web-01")
	if err != nil || len(got.Rules) != 1 || len(got.Rules[0].AllowedSources) != 2 {
		t.Errorf("policy after both saved: %+v %v, want anna's", got, err)
	}

	// A PUT that names nothing: 428, nothing changes; a dry run needs
	// nothing and says what it compared against.
	code, body := e.raw(t, "PUT", "/api/v1/targets/web-01/policy", e.admin, "application/json", strings.NewReader(`{"rules":[{"port":22}]}`))
	if code != http.StatusPreconditionRequired || !strings.Contains(string(body), "If-Match") {
		t.Errorf("PUT without If-Match: %d %s, want 428 naming If-Match", code, body)
	}
	plan, err := ben.PlanPolicy(ctx, "web-01", sshPolicy("0.0.0.0/0"))
	if err != nil || plan.ETag != saved.ETag {
		t.Errorf("plan: ETag %q %v, want the current %q", plan.ETag, err, saved.ETag)
	}
	if _, err := ben.SetPolicyIf(ctx, "web-01", sshPolicy("192.0.2.0/24"), plan.ETag); err != nil {
		t.Errorf("ben saves what he planned against the current policy: %v", err)
	}
	// Weak tags never match (strong comparison); "*" matches any policy.
	for _, tt := range []struct {
		ifMatch string
		want    int
	}{{"W/" + plan.ETag, 412}, {`"nope", *`, 200}} {
		code, body := e.raw(t, "PUT", "/api/v1/targets/web-01/policy", e.admin, "application/json", strings.NewReader(`{"rules":[{"port":22,"max_duration":"1h"}]}`), "If-Match", tt.ifMatch)
		if code != tt.want {
			t.Errorf("If-Match %s: %d %s, want %d", tt.ifMatch, code, body, tt.want)
		}
	}
}

// currentPolicyHeader is the precondition header a PUT of target's policy
// needs to replace whatever it holds now: If-Match with its ETag, or
// If-None-Match: * when it has none.
func currentPolicyHeader(t *testing.T, c *client.Client, target string) (string, string) {
	t.Helper()
	tg, err := c.Target(context.Background(), target)
	if err != nil || tg.PolicyETag == "" {
		return "If-None-Match", "*"
	}
	return "If-Match", tg.PolicyETag
}

// TestPolicySaveRaceAcrossReplicas: two replicas on one PostgreSQL database
// receive at once a PUT naming the same ETag; exactly one saves and the
// other is refused with 412, round after round (the precondition is
// checked in the write transaction, which holds the store's write lock
// across replicas).
func TestPolicySaveRaceAcrossReplicas(t *testing.T) {
	url := testenv.Postgres(t)
	var envs [2]*env
	for i := range envs {
		st, err := store.OpenPostgres(context.Background(), url, store.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		envs[i] = newEnvOn(t, st, nil)
	}
	ctx := context.Background()
	envs[0].addTarget(t, "web-01", "198.51.100.10")
	envs[0].setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	for round := range 10 {
		_, tag, err := envs[0].c.PolicyETag(ctx, "web-01")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var errs [2]error
		for i, e := range envs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = e.c.SetPolicyIf(ctx, "web-01", sshPolicy(fmt.Sprintf("192.0.2.%d/32", 2*round+i)), tag)
			}()
		}
		wg.Wait()
		saved := 0
		for _, err := range errs {
			switch {
			case err == nil:
				saved++
			case client.StatusOf(err) != http.StatusPreconditionFailed:
				t.Fatalf("round %d: %v, want success or 412", round, err)
			}
		}
		if saved != 1 {
			t.Fatalf("round %d: %d of two PUTs naming the same ETag saved (%v), want 1", round, saved, errs)
		}
	}
}
