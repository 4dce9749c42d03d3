// Package policytest holds test helpers for the packages that carry a policy
// across a boundary (the API's JSON, the policy file): a rule with every
// field set, and a check that a value leaves no field at its zero value.
//
// When a field is added to policy.Rule, TestFullRuleSetsEveryField fails
// until FullRule sets it; then every round-trip test built on FullRule fails
// until the new field crosses that boundary. A setting the file or the API
// cannot say would otherwise be dropped, silently, on the next apply.
package policytest

import (
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// FullRule returns a normalized rule with every field set, valid on a
// target behind a gateway (it publishes with an explicit mapped port inside
// the allocation range).
func FullRule() policy.Rule {
	return policy.Rule{
		Port:             policy.Port{Number: 22, Protocol: policy.TCP},
		AllowedSources:   []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32")},
		MaxDuration:      90 * time.Minute,
		Approval:         policy.Approval{Mode: policy.Manual, Approvals: 2},
		Justification:    policy.Justification{Required: true, MinLength: 12, Pattern: `^(INC|CHG)-[0-9]+: "quoted" #x`},
		CloseEstablished: true,
		Publish:          true,
		MappedPort:       20022,
		Access:           policy.AccessBoth,
		IdleTimeout:      15 * time.Minute,
		Logins:           []string{"ubuntu", "deploy"},
		Windows:          []string{"Mon-Fri 08:00-18:00 Europe/Berlin", "Sat 22:00-06:00 UTC"},
		ApprovalGroups:   []policy.GroupApproval{{From: "group:dba", Count: 1}, {From: "role:approver", Count: 1}},
	}
}

// RecordedRule returns a normalized recorded rule: the fields FullRule
// cannot set with its own (recording needs bastion-only access, which
// FullRule's publish excludes) are set here. Tests that need every field
// said check ZeroFieldsOfAll(FullRule(), RecordedRule()).
func RecordedRule() policy.Rule {
	return policy.Rule{
		Port:        policy.Port{Number: 2222, Protocol: policy.TCP},
		MaxDuration: time.Hour,
		Approval:    policy.Approval{Mode: policy.Auto},
		Access:      policy.AccessBastion,
		Record:      true,
		RecordInput: true,
	}
}

// ZeroFieldsOfAll returns the field paths that are zero in every one of vs
// (values of one type).
func ZeroFieldsOfAll(vs ...any) []string {
	count := map[string]int{}
	var order []string
	for _, v := range vs {
		for _, f := range ZeroFields(v) {
			if count[f] == 0 {
				order = append(order, f)
			}
			count[f]++
		}
	}
	var out []string
	for _, f := range order {
		if count[f] == len(vs) {
			out = append(out, f)
		}
	}
	return out
}

// ZeroFields returns the paths of the fields of v that hold their zero
// value (an empty slice or a nil pointer counts as zero). It walks into
// structs declared in jitgate's packages and treats other types (such as
// netip.Prefix or time.Time) as single values.
func ZeroFields(v any) []string {
	var out []string
	zeroFields(reflect.ValueOf(v), reflect.TypeOf(v).Name(), &out)
	return out
}

func zeroFields(v reflect.Value, path string, out *[]string) {
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			*out = append(*out, path)
			return
		}
		zeroFields(v.Elem(), path, out)
	case v.Kind() == reflect.Struct && strings.HasPrefix(v.Type().PkgPath(), "github.com/jitgate/jitgate/"):
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			zeroFields(v.Field(i), path+"."+f.Name, out)
		}
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			*out = append(*out, path)
		}
	default:
		if v.IsZero() {
			*out = append(*out, path)
		}
	}
}
