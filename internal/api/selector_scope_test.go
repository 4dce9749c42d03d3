package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestSelectorNamesNoLabelsOfUnreadableTargets: a person still sees the
// requests they made on a target they may no longer read, but a label
// selector cannot tell them that target's labels: there it matches as if
// the target had none. Before, ?selector=env=prod kept bob's old request
// and ?selector=env=dev dropped it, so bob could read (and follow) the
// labels of a target he lost access to, one guess at a time.
func TestSelectorNamesNoLabelsOfUnreadableTargets(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "web-01", sshPolicy("0.0.0.0/0"))
	bobs := authz.Binding{Principal: "user:bob", Role: authz.Requester, Scope: "target:web-01"}
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, bobs, time.Now()); err != nil {
		t.Fatal(err)
	}
	bob, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.WithToken(bob).CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(30 * time.Minute), Reason: "deploy"}); err != nil {
		t.Fatalf("bob asks: %v", err)
	}
	count := func(sel string) int {
		t.Helper()
		code, body := e.raw(t, "GET", "/api/v1/requests?selector="+sel, bob, "", nil)
		if code != http.StatusOK {
			t.Fatalf("selector %s: %d %s", sel, code, body)
		}
		var rs []wire.Request
		if err := json.Unmarshal(body, &rs); err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}
	// While bob may read web-01, the selector sees its labels.
	if n, m := count("env=prod"), count("env=dev"); n != 1 || m != 0 {
		t.Fatalf("bob reading web-01: env=prod %d, env=dev %d requests; want 1, 0", n, m)
	}
	if err := e.st.DeleteBinding(ctx, store.Actor{Name: "test"}, bobs, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		sel  string
		want int
	}{{"", 1}, {"env=prod", 0}, {"env=dev", 0}, {"env!=prod", 1}, {"env!=dev", 1}} {
		if got := count(tt.sel); got != tt.want {
			t.Errorf("bob without access, selector %q: %d requests, want %d (as if web-01 had no labels)", tt.sel, got, tt.want)
		}
	}
}
