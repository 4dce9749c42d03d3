package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestWhoamiAdminsOnlyForPeople: whoami names the admins to ask only to a
// person who holds no role (the console's "whom to ask" page). A service
// account's token with no binding (a CI token whose bindings were removed,
// or one that leaked) learns nothing from it: no person reads its answer,
// and the admins are whom an attacker would phish next. Before, it got the
// list. Without a token whoami is 401. Service accounts bound as admin
// are never named (before, the person was told "service:deploy").
func TestWhoamiAdminsOnlyForPeople(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	token := func(kind, subject string) string {
		secret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: kind, Subject: subject, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	// A service account bound as admin everywhere is nobody to ask, and
	// its name is that of a token worth stealing: erin is not told it.
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "service:deploy", Role: authz.Admin, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token string
		status      int
		admins      bool
	}{
		{"person without a role", token(store.KindPersonal, "erin"), http.StatusOK, true},
		{"service without a role", token(store.KindService, "ci"), http.StatusOK, false},
		{"admin", e.admin, http.StatusOK, false},
		{"no token", "", http.StatusUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.raw(t, "GET", "/api/v1/whoami", tt.token, "", nil)
			if code != tt.status {
				t.Fatalf("whoami: %d %s, want %d", code, body, tt.status)
			}
			if code != http.StatusOK {
				return
			}
			var w wire.Whoami
			if err := json.Unmarshal(body, &w); err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(w.Admins, "user:alice"); got != tt.admins {
				t.Errorf("admins %v: naming alice %v, want %v", w.Admins, got, tt.admins)
			}
			if slices.Contains(w.Admins, "service:deploy") {
				t.Errorf("admins %v name the service account deploy", w.Admins)
			}
		})
	}
}
