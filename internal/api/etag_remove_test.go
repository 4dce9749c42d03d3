package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/jitgate/jitgate/internal/client"
)

// TestPolicyRemovalNamesThePolicy: a DELETE of a policy with If-Match
// removes only the policy it names. Anna confirms removing the policy she
// read (port 22) while Ben adds port 3306 to it; her removal is refused
// with 412 and Ben's policy stays, instead of opening 3306 to everyone
// without anyone having been asked about it. Before, DELETE ignored
// If-Match (RFC 9110 §13.1.1 has a server evaluate it).
func TestPolicyRemovalNamesThePolicy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	_, read, err := e.c.PolicyETag(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	bens := sshPolicy("198.51.100.0/24")
	bens.Rules = append(bens.Rules, bens.Rules[0])
	bens.Rules[1].Port = 3306
	if _, err := e.c.SetPolicyIf(ctx, "web-01", bens, read); err != nil {
		t.Fatalf("ben adds 3306: %v", err)
	}
	if err := e.c.RemovePolicyIf(ctx, "web-01", read); client.StatusOf(err) != http.StatusPreconditionFailed {
		t.Fatalf("anna removes the policy she read: %v, want 412", err)
	}
	got, now, err := e.c.PolicyETag(ctx, "web-01")
	if err != nil || len(got.Rules) != 2 {
		t.Fatalf("policy after the refused removal: %+v %v, want ben's two rules", got, err)
	}
	if code, body := e.raw(t, "DELETE", "/api/v1/targets/web-01/policy", e.admin, "", nil, "If-Match", `W/`+now); code != http.StatusPreconditionFailed {
		t.Errorf("DELETE with a weak tag: %d %s, want 412 (strong comparison)", code, body)
	}
	if err := e.c.RemovePolicyIf(ctx, "web-01", now); err != nil {
		t.Fatalf("removal naming the current policy: %v", err)
	}
	if _, _, err := e.c.PolicyETag(ctx, "web-01"); client.StatusOf(err) != http.StatusNotFound {
		t.Errorf("policy after its removal: %v, want 404", err)
	}
}
