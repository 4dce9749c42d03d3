package oidc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIdentityFromClaims(t *testing.T) {
	tests := []struct {
		name      string
		userClaim string
		claims    map[string]any
		want      Identity
		err       string
	}{
		{name: "email first", claims: map[string]any{"sub": "s1", "email": "a@example.com", "preferred_username": "a", "groups": []any{"ops", "dba", "ops"}},
			want: Identity{Username: "a@example.com", Subject: "s1", Groups: []string{"dba", "ops"}}},
		{name: "unverified email is skipped", claims: map[string]any{"sub": "s1", "email": "ceo@example.com", "email_verified": false, "preferred_username": "a"},
			want: Identity{Username: "a", Subject: "s1"}},
		{name: "sub last", claims: map[string]any{"sub": "s1"}, want: Identity{Username: "s1", Subject: "s1"}},
		{name: "configured claim", userClaim: "upn", claims: map[string]any{"sub": "s1", "email": "a@example.com", "upn": "a@corp.example"},
			want: Identity{Username: "a@corp.example", Subject: "s1"}},
		{name: "configured claim missing: no fallback", userClaim: "upn", claims: map[string]any{"sub": "s1", "email": "a@example.com"}, err: "upn"},
		{name: "one group as a string", claims: map[string]any{"sub": "s1", "groups": "Team A"}, want: Identity{Username: "s1", Subject: "s1", Groups: []string{"Team A"}}},
		{name: "groups of the wrong type", claims: map[string]any{"sub": "s1", "groups": 7.0}, err: "not a list"},
		{name: "admin is reserved", claims: map[string]any{"sub": "s1", "preferred_username": "admin"}, err: "reserved"},
		{name: "a kind prefix passes for a service", claims: map[string]any{"sub": "s1", "preferred_username": "service:deploy"}, err: "kind prefix"},
		{name: "space in user name", claims: map[string]any{"sub": "s1", "preferred_username": "a b"}, err: "spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Provider{cfg: Config{UsernameClaim: tt.userClaim}.WithDefaults()}
			got, err := p.identity(tt.claims)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
		})
	}
}
