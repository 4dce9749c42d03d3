package policy_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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

// TestIdleTimeout checks the idle timeout of a rule: only bastion rules
// take one, within bounds; a longer one, or none where there was one, is
// weaker.
func TestIdleTimeout(t *testing.T) {
	l := policy.DefaultLimits()
	for _, tt := range []struct {
		name      string
		rule      policy.Rule
		wantField string
	}{
		{"bastion", policy.Rule{Port: tcp(22), Access: policy.AccessBastion, IdleTimeout: 15 * time.Minute}, ""},
		{"direct", policy.Rule{Port: tcp(22), IdleTimeout: 15 * time.Minute}, "rules[0].idle_timeout"},
		{"too short", policy.Rule{Port: tcp(22), Access: policy.AccessBoth, IdleTimeout: time.Millisecond}, "rules[0].idle_timeout"},
		{"too long", policy.Rule{Port: tcp(22), Access: policy.AccessBoth, IdleTimeout: 25 * time.Hour}, "rules[0].idle_timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Normalize(policy.Policy{Rules: []policy.Rule{tt.rule}})
			var fe *policy.FieldError
			if tt.wantField == "" && err != nil || tt.wantField != "" && (!errors.As(err, &fe) || fe.Field != tt.wantField) {
				t.Errorf("Normalize = %v, want field %q", err, tt.wantField)
			}
		})
	}
	rule := func(d time.Duration) policy.Policy {
		return policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Access: policy.AccessBastion, IdleTimeout: d}}}
	}
	for _, tt := range []struct {
		from, to time.Duration
		want     string
	}{
		{0, 10 * time.Minute, "22/tcp idle_timeout: none -> 10m"},
		{10 * time.Minute, 0, "22/tcp idle_timeout: 10m -> none (weaker)"},
		{10 * time.Minute, 20 * time.Minute, "22/tcp idle_timeout: 10m -> 20m (weaker)"},
		{20 * time.Minute, 10 * time.Minute, "22/tcp idle_timeout: 20m -> 10m"},
	} {
		old := rule(tt.from)
		cs := l.Compare(&old, rule(tt.to))
		if len(cs) != 1 || cs[0].String() != tt.want {
			t.Errorf("Compare %s -> %s = %v, want %q", tt.from, tt.to, cs, tt.want)
		}
	}
}

// TestLogins checks a rule's login names: POSIX user names only, on a TCP
// port, each once; adding one is weaker, removing one is not.
func TestLogins(t *testing.T) {
	l := policy.DefaultLimits()
	many := make([]string, policy.MaxLogins+1)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	for _, tt := range []struct {
		name      string
		logins    []string
		port      policy.Port
		wantField string
	}{
		{"two", []string{"ubuntu", "deploy"}, tcp(22), ""},
		{"dotted and underscored", []string{"svc.backup_1", "_apt"}, tcp(22), ""},
		{"control character", []string{"ubuntu\n"}, tcp(22), "rules[0].logins[0]"},
		{"comma", []string{"ubuntu", "a,b"}, tcp(22), "rules[0].logins[1]"},
		{"space", []string{"a b"}, tcp(22), "rules[0].logins[0]"},
		{"wildcard", []string{"*"}, tcp(22), "rules[0].logins[0]"},
		{"option-like", []string{"-oProxyCommand"}, tcp(22), "rules[0].logins[0]"},
		{"empty", []string{""}, tcp(22), "rules[0].logins[0]"},
		{"too long", []string{strings.Repeat("a", 33)}, tcp(22), "rules[0].logins[0]"},
		{"twice", []string{"deploy", "deploy"}, tcp(22), "rules[0].logins[1]"},
		{"too many", many, tcp(22), "rules[0].logins"},
		{"udp", []string{"ubuntu"}, policy.Port{Number: 53, Protocol: policy.UDP}, "rules[0].logins"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pol, err := l.Normalize(policy.Policy{Rules: []policy.Rule{{Port: tt.port, Logins: tt.logins}}})
			var fe *policy.FieldError
			if tt.wantField == "" && err != nil || tt.wantField != "" && (!errors.As(err, &fe) || fe.Field != tt.wantField) {
				t.Fatalf("Normalize = %v, want field %q", err, tt.wantField)
			}
			if err == nil && !slices.Equal(pol.Rules[0].Logins, tt.logins) {
				t.Errorf("logins %q, want %q", pol.Rules[0].Logins, tt.logins)
			}
		})
	}
	rule := func(ls ...string) policy.Policy {
		return policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Logins: ls}}}
	}
	for _, tt := range []struct {
		from, to []string
		want     string
	}{
		{nil, []string{"ubuntu"}, "22/tcp logins: none -> ubuntu (weaker)"},
		{[]string{"ubuntu"}, []string{"ubuntu", "root"}, "22/tcp logins: ubuntu -> ubuntu,root (weaker)"},
		{[]string{"ubuntu", "root"}, []string{"ubuntu"}, "22/tcp logins: ubuntu,root -> ubuntu"},
		{[]string{"ubuntu"}, nil, "22/tcp logins: ubuntu -> none"},
		{[]string{"ubuntu"}, []string{"deploy"}, "22/tcp logins: ubuntu -> deploy (weaker)"},
	} {
		old := rule(tt.from...)
		cs := l.Compare(&old, rule(tt.to...))
		if len(cs) != 1 || cs[0].String() != tt.want {
			t.Errorf("Compare %q -> %q = %v, want %q", tt.from, tt.to, cs, tt.want)
		}
	}
}

// TestRecord checks where a rule may be recorded: only a TCP port reached
// through the bastion alone (a direct grant would pass around the
// recorder), input only with output; turning recording off is weaker.
func TestRecord(t *testing.T) {
	l := policy.DefaultLimits()
	for _, tt := range []struct {
		name      string
		rule      policy.Rule
		wantField string
	}{
		{"bastion", policy.Rule{Port: tcp(22), Access: policy.AccessBastion, Record: true}, ""},
		{"bastion with input", policy.Rule{Port: tcp(22), Access: policy.AccessBastion, Record: true, RecordInput: true}, ""},
		{"direct", policy.Rule{Port: tcp(22), Record: true}, "rules[0].record"},
		{"both", policy.Rule{Port: tcp(22), Access: policy.AccessBoth, Record: true}, "rules[0].record"},
		{"input without record", policy.Rule{Port: tcp(22), Access: policy.AccessBastion, RecordInput: true}, "rules[0].record_input"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Normalize(policy.Policy{Rules: []policy.Rule{tt.rule}})
			var fe *policy.FieldError
			if tt.wantField == "" && err != nil || tt.wantField != "" && (!errors.As(err, &fe) || fe.Field != tt.wantField) {
				t.Fatalf("Normalize = %v, want field %q", err, tt.wantField)
			}
		})
	}
	rule := func(rec, in bool) policy.Policy {
		return policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Access: policy.AccessBastion, Record: rec, RecordInput: in}}}
	}
	for _, tt := range []struct {
		from, to policy.Policy
		want     []string
	}{
		{rule(false, false), rule(true, false), []string{"22/tcp record: off -> on"}},
		{rule(true, false), rule(false, false), []string{"22/tcp record: on -> off (weaker)"}},
		{rule(true, true), rule(true, false), []string{"22/tcp record_input: on -> off (weaker)"}},
	} {
		cs := l.Compare(&tt.from, tt.to)
		var got []string
		for _, c := range cs {
			got = append(got, c.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Compare = %q, want %q", got, tt.want)
		}
	}
}
