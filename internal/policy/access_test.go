package policy_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// TestAccessNormalize checks the access field: direct is the default (kept
// as ""), bastion and both are kept, anything else names the field, and a
// bastion-only port cannot be published on a gateway.
func TestAccessNormalize(t *testing.T) {
	l := policy.DefaultLimits()
	tests := []struct {
		name      string
		rule      policy.Rule
		want      policy.Access
		wantField string
	}{
		{"default", policy.Rule{Port: tcp(22)}, "", ""},
		{"direct", policy.Rule{Port: tcp(22), Access: "direct"}, "", ""},
		{"bastion", policy.Rule{Port: tcp(22), Access: "Bastion"}, policy.AccessBastion, ""},
		{"both", policy.Rule{Port: tcp(22), Access: "both"}, policy.AccessBoth, ""},
		{"unknown", policy.Rule{Port: tcp(22), Access: "tunnel"}, "", "rules[0].access"},
		{"published bastion", policy.Rule{Port: tcp(22), Access: "bastion", Publish: true}, "", "rules[0].publish"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Normalize(policy.Policy{Rules: []policy.Rule{tt.rule}})
			var fe *policy.FieldError
			switch {
			case tt.wantField != "":
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("Normalize() error = %v, want a field error for %s", err, tt.wantField)
				}
			case err != nil:
				t.Fatalf("Normalize() error: %v", err)
			case got.Rules[0].Access != tt.want:
				t.Errorf("access = %q, want %q", got.Rules[0].Access, tt.want)
			}
		})
	}
}

// TestEvaluateBastion checks requests against rules by access: a request
// without a source (bastion only) fits bastion and both rules and is refused
// on a direct rule; on a bastion-only rule the source is not judged (it
// opens nothing).
func TestEvaluateBastion(t *testing.T) {
	l := policy.DefaultLimits()
	pol, err := l.Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), Access: policy.AccessBastion, AllowedSources: pfxs("192.0.2.0/24")},
		{Port: tcp(443), Access: policy.AccessBoth, AllowedSources: pfxs("192.0.2.0/24")},
		{Port: tcp(3389)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		req       policy.Request
		wantField string
		wantDeny  bool
	}{
		{"bastion only, no source", policy.Request{Ports: []policy.Port{tcp(22)}, Duration: time.Hour}, "", false},
		{"both, no source", policy.Request{Ports: []policy.Port{tcp(22), tcp(443)}, Duration: time.Hour}, "", false},
		{"direct, no source", policy.Request{Ports: []policy.Port{tcp(22), tcp(3389)}, Duration: time.Hour}, "source", false},
		{"bastion only, source outside", policy.Request{Ports: []policy.Port{tcp(22)}, Source: pfx("203.0.113.7/32"), Duration: time.Hour}, "", false},
		{"both, source outside", policy.Request{Ports: []policy.Port{tcp(443)}, Source: pfx("203.0.113.7/32"), Duration: time.Hour}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Evaluate(pol, tt.req)
			var (
				fe *policy.FieldError
				de *policy.DenyError
			)
			switch {
			case tt.wantField != "":
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("Evaluate() = %v, want a field error for %s", err, tt.wantField)
				}
			case tt.wantDeny:
				if !errors.As(err, &de) {
					t.Fatalf("Evaluate() = %v, want a refusal", err)
				}
			case err != nil:
				t.Fatalf("Evaluate() = %v, want allowed", err)
			}
		})
	}
	if !pol.BastionOnly([]policy.Port{tcp(22)}) || pol.BastionOnly([]policy.Port{tcp(22), tcp(443)}) || pol.BastionOnly(nil) {
		t.Error("BastionOnly: want true only for ports that are all bastion-only")
	}
}
