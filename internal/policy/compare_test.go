package policy_test

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/policy/policytest"
)

func TestCompare(t *testing.T) {
	l := policy.DefaultLimits()
	base := func() policy.Rule {
		return policy.Rule{Port: tcp(22), AllowedSources: pfxs("198.51.100.0/24"), MaxDuration: time.Hour,
			Approval:      policy.Approval{Mode: policy.Manual, Approvals: 2},
			Justification: policy.Justification{Required: true, MinLength: 10, Pattern: "^INC-"}, CloseEstablished: true,
			Publish: true, MappedPort: 20022}
	}
	tests := []struct {
		name string
		mod  func(*policy.Rule)
		// want is the one change expected, as its String.
		want string
	}{
		{"longer max", func(r *policy.Rule) { r.MaxDuration = 3 * time.Hour }, "22/tcp max_duration: 1h -> 3h (weaker)"},
		{"shorter max", func(r *policy.Rule) { r.MaxDuration = 30 * time.Minute }, "22/tcp max_duration: 1h -> 30m"},
		{"source widened", func(r *policy.Rule) { r.AllowedSources = pfxs("198.51.0.0/16") },
			"22/tcp allowed_sources: 198.51.100.0/24 -> 198.51.0.0/16 (weaker)"},
		{"source added", func(r *policy.Rule) { r.AllowedSources = pfxs("198.51.100.0/24", "203.0.113.0/24") },
			"22/tcp allowed_sources: 198.51.100.0/24 -> 198.51.100.0/24, 203.0.113.0/24 (weaker)"},
		{"source narrowed", func(r *policy.Rule) { r.AllowedSources = pfxs("198.51.100.0/25") },
			"22/tcp allowed_sources: 198.51.100.0/24 -> 198.51.100.0/25"},
		{"sources to per request", func(r *policy.Rule) { r.AllowedSources = nil },
			"22/tcp allowed_sources: 198.51.100.0/24 -> per request (weaker)"},
		{"manual to auto", func(r *policy.Rule) { r.Approval = policy.Approval{Mode: policy.Auto} },
			"22/tcp approval: manual (2 approvals) -> auto (weaker)"},
		{"fewer approvals", func(r *policy.Rule) { r.Approval.Approvals = 1 },
			"22/tcp approval: manual (2 approvals) -> manual (1 approval) (weaker)"},
		{"more approvals", func(r *policy.Rule) { r.Approval.Approvals = 3 },
			"22/tcp approval: manual (2 approvals) -> manual (3 approvals)"},
		{"reason optional but min length kept", func(r *policy.Rule) { r.Justification.Required = false },
			"22/tcp justification.required: on -> off"},
		{"shorter reason", func(r *policy.Rule) { r.Justification.MinLength = 3 },
			"22/tcp justification.min_length: 10 -> 3 (weaker)"},
		{"pattern removed", func(r *policy.Rule) { r.Justification.Pattern = "" },
			`22/tcp justification.pattern: "^INC-" -> none (weaker)`},
		{"pattern changed", func(r *policy.Rule) { r.Justification.Pattern = "^CHG-" },
			`22/tcp justification.pattern: "^INC-" -> "^CHG-" (weaker)`},
		{"close established off", func(r *policy.Rule) { r.CloseEstablished = false },
			"22/tcp close_established: on -> off (weaker)"},
		{"unpublished", func(r *policy.Rule) { r.Publish, r.MappedPort = false, 0 }, ""},
		{"mapped port", func(r *policy.Rule) { r.MappedPort = 20023 }, "22/tcp mapped_port: 20022 -> 20023"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.mod(&r)
			old := policy.Policy{Rules: []policy.Rule{base()}}
			got := l.Compare(&old, policy.Policy{Rules: []policy.Rule{r}})
			var s []string
			for _, c := range got {
				s = append(s, c.String())
			}
			if tt.want == "" {
				if len(got) != 2 {
					t.Fatalf("Compare = %q, want publish and mapped_port changes", s)
				}
				return
			}
			if len(s) != 1 || s[0] != tt.want {
				t.Errorf("Compare = %q, want [%q]", s, tt.want)
			}
		})
	}

	// Publishing, where there was none, is weaker.
	a := base()
	a.Publish, a.MappedPort = false, 0
	old := policy.Policy{Rules: []policy.Rule{a}}
	if got := policy.Weaker(l.Compare(&old, policy.Policy{Rules: []policy.Rule{base()}})); len(got) != 1 || got[0].Field != "publish" {
		t.Errorf("publishing: weaker changes %v, want publish", got)
	}
}

func TestCompareRules(t *testing.T) {
	l := policy.DefaultLimits()
	r22 := policy.Rule{Port: tcp(22), MaxDuration: time.Hour, Approval: policy.Approval{Mode: policy.Auto}}
	r3389 := policy.Rule{Port: tcp(3389), MaxDuration: time.Hour, Approval: policy.Approval{Mode: policy.Auto}}
	r53 := policy.Rule{Port: udp(53), MaxDuration: time.Hour, Approval: policy.Approval{Mode: policy.Auto}}

	// No policy before: every rule is new, nothing weaker.
	got := l.Compare(nil, policy.Policy{Rules: []policy.Rule{r22, r3389}})
	if len(got) != 2 || got[0].From != "" || got[0].Field != "" || len(policy.Weaker(got)) != 0 {
		t.Errorf("Compare(nil, ...) = %v", got)
	}
	if s := got[0].String(); s != "22/tcp: new rule (max 1h, sources per request, approval auto)" {
		t.Errorf("new rule says %q", s)
	}

	// Dropping a rule opens its port: weaker, and named.
	old := policy.Policy{Rules: []policy.Rule{r22, r3389, r53}}
	got = l.Compare(&old, policy.Policy{Rules: []policy.Rule{r22}})
	if diff := cmp.Diff([]policy.Port{tcp(3389), udp(53)}, policy.DroppedPorts(got)); diff != "" {
		t.Errorf("dropped ports (-want +got):\n%s", diff)
	}
	if len(policy.Weaker(got)) != 2 || got[0].String() != "3389/tcp: rule dropped: the port is no longer gated (weaker)" {
		t.Errorf("Compare dropping rules = %v", got)
	}

	// The same rules in another order: no change.
	if got := l.Compare(&old, policy.Policy{Rules: []policy.Rule{r53, r3389, r22}}); len(got) != 0 {
		t.Errorf("reordered rules: %v", got)
	}

	// From per request to a list: weaker only beyond the per-request width.
	per := policy.Policy{Rules: []policy.Rule{r22}}
	for _, tc := range []struct {
		srcs   []netip.Prefix
		weaker bool
	}{
		{pfxs("203.0.113.7/32"), false},
		{pfxs("2001:db8::1/128"), false},
		{pfxs("203.0.113.0/24"), true},
		{pfxs("2001:db8::/64"), true},
	} {
		r := r22
		r.AllowedSources = tc.srcs
		got := l.Compare(&per, policy.Policy{Rules: []policy.Rule{r}})
		if len(got) != 1 || got[0].Weaker != tc.weaker {
			t.Errorf("per request -> %v: %v, want weaker=%v", tc.srcs, got, tc.weaker)
		}
	}
}

// TestEveryRuleFieldIsCompared changes each field of a full rule in turn and
// checks that Equal and Compare both see it. It fails when a field is added
// to policy.Rule and left out of either: the store would then keep the old
// policy ("unchanged"), or an apply would not say what it changes.
func TestEveryRuleFieldIsCompared(t *testing.T) {
	l := policy.DefaultLimits()
	typ := reflect.TypeOf(policy.Rule{})
	n := 0
	for _, path := range leafFields(typ, nil) {
		n++
		t.Run(strings.Join(pathNames(typ, path), "."), func(t *testing.T) {
			r := policytest.FullRule()
			mutate(t, reflect.ValueOf(&r).Elem().FieldByIndex(path))
			old := policy.Policy{Rules: []policy.Rule{policytest.FullRule()}}
			pol := policy.Policy{Rules: []policy.Rule{r}}
			if old.Equal(pol) {
				t.Errorf("Equal does not see the field change")
			}
			if got := l.Compare(&old, pol); len(got) == 0 {
				t.Errorf("Compare does not see the field change")
			}
		})
	}
	if n < 10 {
		t.Errorf("only %d fields walked", n)
	}
}

// leafFields lists the index paths of the fields of t, walking into the
// structs of package policy.
func leafFields(t reflect.Type, prefix []int) [][]int {
	var out [][]int
	for i := range t.NumField() {
		f := t.Field(i)
		path := append(append([]int(nil), prefix...), i)
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
			out = append(out, leafFields(f.Type, path)...)
			continue
		}
		out = append(out, path)
	}
	return out
}

func pathNames(t reflect.Type, path []int) []string {
	var out []string
	for _, i := range path {
		f := t.Field(i)
		out = append(out, f.Name)
		t = f.Type
	}
	return out
}

// mutate changes v to another value of its type.
func mutate(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint16:
		v.SetUint(v.Uint() + 1)
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	default:
		t.Fatalf("field of kind %s: teach mutate to change it", v.Kind())
	}
}

// TestCompareAccess checks that a change of access counts as weaker exactly
// when it adds a way in: the bastion where there was none, or the direct
// path (the kernel opening to an address) where there was none.
func TestCompareAccess(t *testing.T) {
	l := policy.DefaultLimits()
	tests := []struct {
		from, to policy.Access
		want     string
	}{
		{"", policy.AccessBoth, "22/tcp access: direct -> both (weaker)"},
		{policy.AccessBastion, policy.AccessBoth, "22/tcp access: bastion -> both (weaker)"},
		{policy.AccessBastion, policy.AccessDirect, "22/tcp access: bastion -> direct (weaker)"},
		{policy.AccessBastion, "", "22/tcp access: bastion -> direct (weaker)"},
		{"", policy.AccessBastion, "22/tcp access: direct -> bastion (weaker)"},
		{policy.AccessBoth, policy.AccessBastion, "22/tcp access: both -> bastion"},
		{policy.AccessBoth, policy.AccessDirect, "22/tcp access: both -> direct"},
		{policy.AccessDirect, "", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.from)+"->"+string(tt.to), func(t *testing.T) {
			old := policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Access: tt.from}}}
			pol := policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Access: tt.to}}}
			var got []string
			for _, c := range l.Compare(&old, pol) {
				got = append(got, c.String())
			}
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
		})
	}
}
