package policytest_test

import (
	"testing"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/policy/policytest"
)

// TestFullRuleSetsEveryField fails when policy.Rule gains a field that
// FullRule leaves unset: set it there, and the round-trip tests built on
// FullRule then check that the API and the policy file carry it.
func TestFullRuleSetsEveryField(t *testing.T) {
	if z := policytest.ZeroFieldsOfAll(policytest.FullRule(), policytest.RecordedRule()); len(z) > 0 {
		t.Errorf("FullRule and RecordedRule leave %v unset: give every field of policy.Rule a non-zero value in one of them", z)
	}
	pol := policy.Policy{Rules: []policy.Rule{policytest.FullRule(), policytest.RecordedRule()}}
	if got, err := policy.DefaultLimits().Normalize(pol); err != nil || !got.Equal(pol) {
		t.Errorf("FullRule is not normalized and valid: %v, %+v", err, got)
	}
}

func TestZeroFields(t *testing.T) {
	r := policy.Rule{Port: policy.Port{Number: 22}}
	got := policytest.ZeroFields(r)
	want := map[string]bool{"Rule.Port.Protocol": true, "Rule.AllowedSources": true, "Rule.MaxDuration": true, "Rule.Approval.Mode": true}
	for w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("ZeroFields(%+v) = %v, lacks %s", r, got, w)
		}
	}
	for _, g := range got {
		if g == "Rule.Port.Number" {
			t.Errorf("ZeroFields reports the set field Port.Number: %v", got)
		}
	}
}
