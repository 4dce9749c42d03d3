package policyfile

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/policy/policytest"
	"github.com/jitgate/jitgate/internal/wire"
)

var prefixEqual = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func parseFixture(t *testing.T, name string) (File, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Parse(f)
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		file string
		want File
	}{
		{"valid.yaml", File{Policies: []Policy{
			{Target: "web-01", Line: 3, Rules: []Rule{
				{Port: 22, Protocol: policy.TCP, MaxDuration: 3 * time.Hour, Line: 5, AllowedSources: []netip.Prefix{
					netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/48"),
				}},
				{Port: 3389, Protocol: policy.TCP, MaxDuration: 90 * time.Minute, Line: 9},
			}},
			{Target: "dns-01", Line: 11, Rules: []Rule{
				{Port: 53, Protocol: policy.UDP, Line: 13, AllowedSources: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
			}},
		}}},
		{"full.yaml", File{Policies: []Policy{
			{Target: "app-01", Line: 3, Rules: []Rule{{
				Port: 22, Protocol: policy.TCP, MaxDuration: 90 * time.Minute, Line: 5,
				AllowedSources:   []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32")},
				Approval:         &wire.Approval{Mode: "manual", Approvals: 2},
				Justification:    &wire.Justification{Required: true, MinLength: 12, Pattern: "^(INC|CHG)-[0-9]+"},
				CloseEstablished: true, Publish: true, MappedPort: 20022,
				Windows:   []string{"Mon-Fri 08:00-18:00 Europe/Berlin", "Sat,Sun 22:00-06:00 UTC"},
				Approvals: []wire.GroupApproval{{From: "group:dba", Count: 1}, {From: "group:security", Count: 2}},
			}}},
		}}},
		{"minimal.yaml", File{Policies: []Policy{
			{Target: "db-01", Line: 2, Rules: []Rule{{Port: 5432, Protocol: policy.TCP, Line: 4}}},
		}}},
		{"aliases.yaml", File{Policies: []Policy{
			{Target: "web-01", Line: 2, Rules: []Rule{
				{Port: 22, Protocol: policy.TCP, MaxDuration: 2 * time.Hour, Line: 4, AllowedSources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
			}},
			{Target: "web-02", Line: 5, Rules: []Rule{
				{Port: 22, Protocol: policy.TCP, MaxDuration: 2 * time.Hour, Line: 7, AllowedSources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
				{Port: 443, Protocol: policy.TCP, Line: 8, AllowedSources: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
			}},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := parseFixture(t, tt.file)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, prefixEqual); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		file string
		line int
		// want are substrings of the message.
		want []string
	}{
		{"unknown_key.yaml", 5, []string{`unknown field "max_duraton"`, "known fields: port, protocol, max_duration, allowed_sources"}},
		{"unknown_top.yaml", 1, []string{`unknown field "policy"`, "known fields: policies"}},
		{"bad_port.yaml", 5, []string{"policies[0].rules[1].port", `"70000" is not a port number from 1 to 65535`}},
		{"port_with_protocol.yaml", 4, []string{`"53/udp" is not a port number`, `"protocol:"`}},
		{"missing_port.yaml", 4, []string{"policies[0].rules[0]", `missing "port"`}},
		{"bad_protocol.yaml", 5, []string{"policies[0].rules[0].protocol", `"sctp" must be tcp or udp`}},
		{"bad_cidr.yaml", 7, []string{"allowed_sources[1]", `"198.51.100.0/33" is not a CIDR prefix`}},
		{"host_bits.yaml", 5, []string{"host bits", "did you mean 198.51.100.0/24?"}},
		{"sources_not_list.yaml", 5, []string{"allowed_sources", "must be a list"}},
		{"bad_duration.yaml", 5, []string{"max_duration", `"1d" is not a duration`}},
		{"dup_target.yaml", 8, []string{"policies[2].target", `target "web-01" already has a policy at line 2`}},
		{"dup_port.yaml", 7, []string{"policies[0].rules[2]", "port 22/tcp is already configured at line 4"}},
		{"missing_target.yaml", 5, []string{"policies[1]", `missing "target"`}},
		{"bad_target.yaml", 2, []string{"policies[0].target", "DNS label"}},
		{"no_rules.yaml", 2, []string{"policies[0].rules", "at least one rule"}},
		{"no_policies.yaml", 1, []string{"no policies"}},
		{"empty.yaml", 0, []string{"empty"}},
		{"two_documents.yaml", 5, []string{"more than one YAML document"}},
		// The YAML parser reports the line of the enclosing block, not of the
		// bad indentation; -1 leaves the line unchecked.
		{"syntax.yaml", -1, []string{"did not find expected"}},
		{"duplicate_key.yaml", 3, []string{`"target" already defined at line 2`}},
		{"wrong_shape.yaml", 2, []string{"cannot unmarshal", "a list of policies"}},
		{"bad_bool.yaml", 5, []string{"policies[0].rules[0].close_established", `"yes" is not true or false`}},
		{"mapped_without_publish.yaml", 5, []string{"rules[0].mapped_port", "only a published port", "publish: true"}},
		{"bad_mapped_port.yaml", 6, []string{"rules[0].mapped_port", `"70000" is not a port number`}},
		{"bad_access.yaml", 5, []string{"rules[0].access", `"tunnel" must be direct, bastion or both`}},
		{"bad_idle.yaml", 6, []string{"rules[0].idle_timeout", `"soon" is not a duration`}},
		{"idle_direct.yaml", 5, []string{"rules[0].idle_timeout", "access: bastion"}},
		{"bad_login.yaml", 5, []string{"rules[0].logins[1]", "not a POSIX user name"}},
		{"logins_not_list.yaml", 5, []string{"rules[0].logins", "not a list of login names"}},
		{"record_direct.yaml", 5, []string{"rules[0].record", "access: bastion"}},
		{"record_input_alone.yaml", 6, []string{"rules[0].record_input", "record: true"}},
		{"bad_window.yaml", 7, []string{"rules[0].windows[1]", "runs backwards", "write Fri-Sun,Mon)"}},
		{"window_no_zone.yaml", 5, []string{"rules[0].windows[0]", "DAYS HH:MM-HH:MM ZONE"}},
		{"bad_group.yaml", 7, []string{"rules[0].approvals[1].from", "group:NAME"}},
		{"bad_group_count.yaml", 6, []string{"rules[0].approvals[0].count", "not a number from 1 to 10"}},
		{"group_unknown_key.yaml", 6, []string{"rules[0].approvals[0]", `unknown field "group"`}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := parseFixture(t, tt.file)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error = %v (%T), want *Error", err, err)
			}
			if tt.line >= 0 && pe.Line != tt.line {
				t.Errorf("line = %d, want %d (error: %v)", pe.Line, tt.line, err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q spans several lines", msg)
			}
			if strings.Contains(msg, "policyfile.") {
				t.Errorf("error %q leaks Go type names", msg)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	big := "policies:\n" + strings.Repeat("#\n", MaxSize/2+1)
	if _, err := Parse(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Parse(%d bytes) error = %v, want too large", len(big), err)
	}
}

func TestWire(t *testing.T) {
	f, err := parseFixture(t, "valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(3 * time.Hour), AllowedSources: []string{"198.51.100.0/24", "2001:db8::/48"}},
		{Port: 3389, Protocol: "tcp", MaxDuration: wire.Duration(90 * time.Minute)},
	}}
	if diff := cmp.Diff(want, f.Policies[0].Wire()); diff != "" {
		t.Errorf("Wire mismatch (-want +got):\n%s", diff)
	}
}

// fullWireRule is a rule as the API shows it, with every field set
// (TestEncodeRoundTrip checks that none is left zero).
func fullWireRule() wire.PortRule {
	return wire.PortRule{
		Port: 22, Protocol: "tcp", AllowedSources: []string{"198.51.100.0/24", "2001:db8::/48", "203.0.113.7/32"},
		MaxDuration: wire.Duration(90 * time.Minute), Approval: &wire.Approval{Mode: "manual", Approvals: 2},
		Justification:    &wire.Justification{Required: true, MinLength: 12, Pattern: `^(INC|CHG)-[0-9]+: '"# x`},
		CloseEstablished: true, Publish: true, MappedPort: 20022, Access: "both",
		IdleTimeout: wire.Duration(15 * time.Minute), Logins: []string{"ubuntu", "deploy"},
		Windows:   []string{"Mon-Fri 08:00-18:00 Europe/Berlin", "Sat 22:00-06:00 UTC"},
		Approvals: []wire.GroupApproval{{From: "group:dba", Count: 1}, {From: "role:approver", Count: 2}},
	}
}

// TestEncodeRoundTrip encodes policies as the API shows them and parses
// the file back: every setting must survive. It fails when wire.PortRule
// gains a field the file cannot say (set it in fullWireRule first: the
// ZeroFields check makes sure it is).
func TestEncodeRoundTrip(t *testing.T) {
	full := fullWireRule()
	recorded := wire.PortRule{Port: 2222, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "auto"},
		Access: "bastion", Record: true, RecordInput: true}
	if z := policytest.ZeroFieldsOfAll(full, recorded); len(z) > 0 {
		t.Fatalf("fullWireRule and recorded leave %v unset: set every field of wire.PortRule", z)
	}
	policies := []wire.Policy{
		{Rules: []wire.PortRule{full, recorded, {Port: 53, Protocol: "udp", MaxDuration: wire.Duration(3 * time.Hour), Approval: &wire.Approval{Mode: "auto"}}}},
		{Rules: []wire.PortRule{{Port: 3389, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "auto"},
			Justification: &wire.Justification{Pattern: "^x$"}}}},
	}
	var f File
	for i, wp := range policies {
		p, err := FromWire([]string{"app-01", "web-01"}[i], wp)
		if err != nil {
			t.Fatalf("FromWire: %v", err)
		}
		f.Policies = append(f.Policies, p)
	}
	var buf strings.Builder
	if err := f.Encode(&buf); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := Parse(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatalf("Parse of the encoded file: %v\n%s", err, buf.String())
	}
	if len(got.Policies) != len(policies) {
		t.Fatalf("%d policies back, want %d:\n%s", len(got.Policies), len(policies), buf.String())
	}
	for i, want := range policies {
		if diff := cmp.Diff(want, got.Policies[i].Wire()); diff != "" {
			t.Errorf("policy %d after Encode and Parse (-want +got):\n%s\nfile:\n%s", i, diff, buf.String())
		}
	}
	// Encoding what was parsed writes the same file.
	var again strings.Builder
	if err := got.Encode(&again); err != nil || again.String() != buf.String() {
		t.Errorf("re-encoding differs (%v):\n%s\nvs\n%s", err, again.String(), buf.String())
	}
}

// FuzzParse checks that no input makes Parse panic, that every failure is
// an *Error or a read error, and that what parses is valid.
func FuzzParse(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("policies: [~]"))
	f.Add([]byte("policies: [{target: a, rules: [~, {port: 0x16}]}]"))
	f.Add([]byte("a: &a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error %v is %T, want *Error", err, err)
			}
			return
		}
		if len(file.Policies) == 0 {
			t.Fatal("Parse succeeded with no policies")
		}
		for _, p := range file.Policies {
			if policy.ValidateTargetName(p.Target) != nil || len(p.Rules) == 0 {
				t.Fatalf("Parse accepted invalid policy %+v", p)
			}
			for _, r := range p.Rules {
				if r.Port == 0 || (r.Protocol != policy.TCP && r.Protocol != policy.UDP) || r.MaxDuration < 0 || (r.MappedPort != 0 && !r.Publish) {
					t.Fatalf("Parse accepted invalid rule %+v", r)
				}
				for _, s := range r.AllowedSources {
					if !s.IsValid() || s != s.Masked() {
						t.Fatalf("Parse accepted invalid prefix %v", s)
					}
				}
			}
		}
	})
}

// TestControlCharactersRefused: the one free-text field of a policy file
// refuses control characters with the line and field.
func TestControlCharactersRefused(t *testing.T) {
	_, err := Parse(strings.NewReader("policies:\n  - target: web-01\n    rules:\n      - port: 22\n        justification: {pattern: \"^INC\\e\"}\n"))
	var pe *Error
	if !errors.As(err, &pe) || pe.Field != "policies[0].rules[0].justification.pattern" || !strings.Contains(pe.Msg, `\u001b`) {
		t.Fatalf("Parse = %v, want an error naming the pattern's control character", err)
	}
}
