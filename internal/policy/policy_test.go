package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/policy"
)

// cmpOpts compares policies: netip.Prefix by ==, nil and empty slices alike.
var cmpOpts = cmp.Options{cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = pfx(s)
	}
	return out
}

func tcp(n uint16) policy.Port { return policy.Port{Number: n, Protocol: policy.TCP} }
func udp(n uint16) policy.Port { return policy.Port{Number: n, Protocol: policy.UDP} }

// wantFieldError asserts that err is a *policy.FieldError for field whose
// reason contains reason.
func wantFieldError(t *testing.T, err error, field, reason string) {
	t.Helper()
	var fe *policy.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error = %v (%T), want *policy.FieldError for %q", err, err, field)
	}
	if fe.Field != field {
		t.Errorf("FieldError.Field = %q, want %q (error %v)", fe.Field, field, err)
	}
	if !strings.Contains(fe.Reason, reason) {
		t.Errorf("FieldError.Reason = %q, want it to contain %q", fe.Reason, reason)
	}
	if got, want := fe.Error(), fe.Field+": "+fe.Reason; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestParseProtocol(t *testing.T) {
	tests := []struct {
		in      string
		want    policy.Protocol
		wantErr bool
	}{
		{in: "tcp", want: policy.TCP},
		{in: "udp", want: policy.UDP},
		{in: "TCP", want: policy.TCP},
		{in: "Udp", want: policy.UDP},
		{in: " tcp\t", want: policy.TCP},
		{in: "", wantErr: true},
		{in: "icmp", wantErr: true},
		{in: "tcp6", wantErr: true},
		{in: "sctp", wantErr: true},
		{in: "t cp", wantErr: true},
	}
	for _, tt := range tests {
		got, err := policy.ParseProtocol(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseProtocol(%q) = %q, want error", tt.in, got)
			} else if got != "" {
				t.Errorf("ParseProtocol(%q) returned %q with its error, want \"\"", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseProtocol(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in      string
		want    policy.Port
		wantErr bool
	}{
		{in: "22", want: tcp(22)},
		{in: "22/tcp", want: tcp(22)},
		{in: "22/TCP", want: tcp(22)},
		{in: "53/udp", want: udp(53)},
		{in: "53/UDP", want: udp(53)},
		{in: " 22 ", want: tcp(22)},
		{in: "\t443/tcp\n", want: tcp(443)},
		{in: "1", want: tcp(1)},
		{in: "65535", want: tcp(65535)},
		{in: "65535/udp", want: udp(65535)},
		{in: "022", want: tcp(22)},
		{in: "0", wantErr: true},
		{in: "0/udp", wantErr: true},
		{in: "65536", wantErr: true},
		{in: "4294967296", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "+22", wantErr: true},
		{in: "0x16", wantErr: true},
		{in: "22/icmp", wantErr: true},
		{in: "22/", wantErr: true},
		{in: "/tcp", wantErr: true},
		{in: "22/tcp/udp", wantErr: true},
		{in: "22 /tcp", wantErr: true},
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "ssh", wantErr: true},
		{in: "22.0", wantErr: true},
	}
	for _, tt := range tests {
		got, err := policy.ParsePort(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParsePort(%q) = %v, want error", tt.in, got)
				continue
			}
			if got != (policy.Port{}) {
				t.Errorf("ParsePort(%q) returned %+v with its error, want zero Port", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParsePort(%q) error %q does not quote the input", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePort(%q) error: %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParsePort(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestPortString(t *testing.T) {
	tests := []struct {
		p    policy.Port
		want string
	}{
		{tcp(22), "22/tcp"},
		{udp(53), "53/udp"},
		{tcp(65535), "65535/tcp"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		// Addresses become single-address prefixes.
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "0.0.0.0", want: "0.0.0.0/32"},
		{in: "::", want: "::/128"},
		{in: " 192.0.2.7\n", want: "192.0.2.7/32"},
		// Prefixes.
		{in: "192.0.2.0/24", want: "192.0.2.0/24"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "::/0", want: "::/0"},
		{in: "192.0.2.7/32", want: "192.0.2.7/32"},
		{in: " 10.0.0.0/8 ", want: "10.0.0.0/8"},
		// Host bits are masked.
		{in: "192.0.2.7/24", want: "192.0.2.0/24"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "203.0.113.77/0", want: "0.0.0.0/0"},
		{in: "2001:db8:1:2::1/48", want: "2001:db8:1::/48"},
		{in: "2001:db8::1/0", want: "::/0"},
		// IPv4-mapped IPv6 is unmapped.
		{in: "::ffff:192.0.2.7", want: "192.0.2.7/32"},
		{in: "::ffff:192.0.2.7/128", want: "192.0.2.7/32"},
		{in: "::ffff:192.0.2.7/120", want: "192.0.2.0/24"},
		{in: "::ffff:192.0.2.0/120", want: "192.0.2.0/24"},
		{in: "::ffff:10.9.8.7/104", want: "10.0.0.0/8"},
		{in: "::ffff:0:0/96", want: "0.0.0.0/0"},
		// Zones are rejected, with and without a length.
		{in: "fe80::1%eth0", wantErr: true},
		{in: "fe80::1%eth0/64", wantErr: true},
		{in: "fe80::1%25eth0", wantErr: true},
		// Garbage.
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "garbage", wantErr: true},
		{in: "example.com", wantErr: true},
		{in: "1.2.3", wantErr: true},
		{in: "1.2.3.4.5", wantErr: true},
		{in: "256.1.1.1", wantErr: true},
		{in: "01.2.3.4", wantErr: true},
		{in: "2001:db8::g", wantErr: true},
		{in: "1.2.3.4/33", wantErr: true},
		{in: "::1/129", wantErr: true},
		{in: "1.2.3.4/-1", wantErr: true},
		{in: "1.2.3.4/", wantErr: true},
		{in: "/24", wantErr: true},
		{in: "/", wantErr: true},
		{in: "1.2.3.4/24/8", wantErr: true},
		{in: "1.2.3.4/x", wantErr: true},
		{in: "1.2.3.4 /24", wantErr: true},
	}
	for _, tt := range tests {
		got, err := policy.ParsePrefix(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParsePrefix(%q) = %v, want error", tt.in, got)
			} else if got != (netip.Prefix{}) {
				t.Errorf("ParsePrefix(%q) returned %v with its error, want zero Prefix", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePrefix(%q) error: %v", tt.in, err)
			continue
		}
		if got != pfx(tt.want) {
			t.Errorf("ParsePrefix(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct {
		in   netip.Prefix
		want netip.Prefix
	}{
		{pfx("192.0.2.7/24"), pfx("192.0.2.0/24")},
		{pfx("::ffff:192.0.2.0/120"), pfx("192.0.2.0/24")},
		{pfx("::ffff:192.0.2.7/128"), pfx("192.0.2.7/32")},
		{pfx("2001:db8::1/64"), pfx("2001:db8::/64")},
		{pfx("::/0"), pfx("::/0")},
		{netip.Prefix{}, netip.Prefix{}},
		{netip.PrefixFrom(netip.MustParseAddr("fe80::1%eth0"), 64), pfx("fe80::/64")},
	}
	for _, tt := range tests {
		got := policy.Canonical(tt.in)
		if got != tt.want {
			t.Errorf("Canonical(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if again := policy.Canonical(got); again != got {
			t.Errorf("Canonical is not idempotent: Canonical(%v) = %v", got, again)
		}
	}
}

// TestCanonicalMappedShortPrefix documents a known bug: an IPv4-mapped
// address with a length below /96 (for example ::ffff:192.0.2.7/64, which
// masks to ::/64 and so also covers ::1 and other non-IPv4 addresses) is
// turned into the IPv4 prefix 0.0.0.0/0 instead of being kept as the IPv6
// prefix ::/64 (or rejected).
func TestCanonicalMappedShortPrefix(t *testing.T) {
	for _, s := range []string{"::ffff:192.0.2.7/64", "::ffff:192.0.2.7/95", "::ffff:0:0/0"} {
		got := policy.Canonical(pfx(s))
		if want := pfx(s).Masked(); got != want {
			t.Errorf("Canonical(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestContains(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		// Subset, not overlap.
		{"192.0.2.0/24", "192.0.2.7/32", true},
		{"192.0.2.0/24", "192.0.2.0/32", true},
		{"192.0.2.0/24", "192.0.2.255/32", true},
		{"192.0.2.0/24", "192.0.2.128/25", true},
		{"192.0.2.0/24", "192.0.0.0/16", false},
		{"192.0.2.0/24", "192.0.0.0/22", false},
		{"192.0.2.0/24", "192.0.3.0/24", false},
		{"192.0.2.0/24", "192.0.3.1/32", false},
		{"192.0.2.0/24", "192.0.1.255/32", false},
		{"2001:db8::/32", "2001:db8:ffff::/48", true},
		{"2001:db8::/32", "2001:db8::1/128", true},
		{"2001:db8::/48", "2001:db8::/32", false},
		{"2001:db8::/32", "2001:db9::1/128", false},
		// Equal prefixes.
		{"192.0.2.0/24", "192.0.2.0/24", true},
		{"192.0.2.7/32", "192.0.2.7/32", true},
		{"2001:db8::/32", "2001:db8::/32", true},
		{"2001:db8::1/128", "2001:db8::1/128", true},
		// Unmasked input is masked first.
		{"192.0.2.7/24", "192.0.2.9/32", true},
		{"192.0.2.7/24", "192.0.2.200/24", true},
		{"192.0.2.0/24", "192.0.2.200/23", false},
		// Families never contain each other.
		{"0.0.0.0/0", "2001:db8::1/128", false},
		{"0.0.0.0/0", "::/0", false},
		{"::/0", "192.0.2.1/32", false},
		{"::/0", "0.0.0.0/0", false},
		{"192.0.2.0/24", "2001:db8::/32", false},
		{"::/96", "192.0.2.1/32", false}, // IPv4-compatible space is IPv6.
		// The whole spaces.
		{"0.0.0.0/0", "0.0.0.0/0", true},
		{"0.0.0.0/0", "203.0.113.9/32", true},
		{"0.0.0.0/0", "10.0.0.0/8", true},
		{"::/0", "::/0", true},
		{"::/0", "2001:db8::/32", true},
		{"10.0.0.0/8", "0.0.0.0/0", false},
		{"2001:db8::/32", "::/0", false},
		// IPv4-mapped IPv6 forms are IPv4.
		{"192.0.2.0/24", "::ffff:192.0.2.7/128", true},
		{"192.0.2.0/24", "::ffff:192.0.2.0/120", true},
		{"192.0.2.0/24", "::ffff:192.0.0.0/112", false},
		{"::ffff:192.0.2.0/120", "192.0.2.7/32", true},
		{"::ffff:192.0.2.0/120", "::ffff:192.0.2.7/128", true},
		{"::ffff:192.0.2.0/120", "192.0.3.7/32", false},
		{"10.0.0.0/8", "::ffff:10.0.0.0/104", true},
		{"::ffff:0:0/96", "10.0.0.1/32", true},
		{"::ffff:0:0/96", "0.0.0.0/0", true},
		{"::/0", "::ffff:192.0.2.1/128", false},
		{"2001:db8::/32", "::ffff:192.0.2.1/128", false},
	}
	for _, tt := range tests {
		if got := policy.Contains(pfx(tt.outer), pfx(tt.inner)); got != tt.want {
			t.Errorf("Contains(%s, %s) = %v, want %v", tt.outer, tt.inner, got, tt.want)
		}
	}
}

func TestContainsInvalid(t *testing.T) {
	valid := pfx("0.0.0.0/0")
	for _, c := range []struct{ outer, inner netip.Prefix }{
		{netip.Prefix{}, valid},
		{valid, netip.Prefix{}},
		{netip.Prefix{}, netip.Prefix{}},
		{pfx("::/0"), netip.Prefix{}},
	} {
		if policy.Contains(c.outer, c.inner) {
			t.Errorf("Contains(%v, %v) = true, want false", c.outer, c.inner)
		}
	}
}

func TestDefaultLimits(t *testing.T) {
	want := policy.Limits{
		MinRuleDuration:     5 * time.Minute,
		MaxRuleDuration:     24 * time.Hour,
		DefaultRuleDuration: 3 * time.Hour,
		MinRequestDuration:  time.Second,
		PerRequestBits4:     32,
		PerRequestBits6:     128,
		MaxLivePerRequester: 256,
		MaxLivePerTarget:    100_000,
	}
	if diff := cmp.Diff(want, policy.DefaultLimits()); diff != "" {
		t.Errorf("DefaultLimits() mismatch (-want +got):\n%s", diff)
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*policy.Limits)
		wantErr string
	}{
		{name: "defaults", mod: func(*policy.Limits) {}},
		{name: "min equals max", mod: func(l *policy.Limits) {
			l.MinRuleDuration, l.MaxRuleDuration, l.DefaultRuleDuration = time.Hour, time.Hour, time.Hour
		}},
		{name: "default at min", mod: func(l *policy.Limits) { l.DefaultRuleDuration = l.MinRuleDuration }},
		{name: "default at max", mod: func(l *policy.Limits) { l.DefaultRuleDuration = l.MaxRuleDuration }},
		{name: "bits zero", mod: func(l *policy.Limits) { l.PerRequestBits4, l.PerRequestBits6 = 0, 0 }},
		{name: "bits 24 and 64", mod: func(l *policy.Limits) { l.PerRequestBits4, l.PerRequestBits6 = 24, 64 }},
		{name: "min zero", mod: func(l *policy.Limits) { l.MinRuleDuration = 0 }, wantErr: "max rule duration"},
		{name: "min negative", mod: func(l *policy.Limits) { l.MinRuleDuration = -time.Minute }, wantErr: "max rule duration"},
		{name: "max below min", mod: func(l *policy.Limits) { l.MaxRuleDuration = l.MinRuleDuration - 1 }, wantErr: "max rule duration"},
		{name: "default below min", mod: func(l *policy.Limits) { l.DefaultRuleDuration = l.MinRuleDuration - 1 }, wantErr: "default rule duration"},
		{name: "default above max", mod: func(l *policy.Limits) { l.DefaultRuleDuration = l.MaxRuleDuration + 1 }, wantErr: "default rule duration"},
		{name: "default zero", mod: func(l *policy.Limits) { l.DefaultRuleDuration = 0 }, wantErr: "default rule duration"},
		{name: "bits4 negative", mod: func(l *policy.Limits) { l.PerRequestBits4 = -1 }, wantErr: "IPv4 prefix length -1"},
		{name: "bits4 33", mod: func(l *policy.Limits) { l.PerRequestBits4 = 33 }, wantErr: "IPv4 prefix length 33"},
		{name: "bits6 negative", mod: func(l *policy.Limits) { l.PerRequestBits6 = -1 }, wantErr: "IPv6 prefix length -1"},
		{name: "bits6 129", mod: func(l *policy.Limits) { l.PerRequestBits6 = 129 }, wantErr: "IPv6 prefix length 129"},
		{name: "zero value", mod: func(l *policy.Limits) { *l = policy.Limits{} }, wantErr: "max rule duration"},
		{name: "live per requester zero", mod: func(l *policy.Limits) { l.MaxLivePerRequester = 0 }, wantErr: "max-live-requests-per-requester 0 must be at least 1"},
		{name: "live per target below per requester", mod: func(l *policy.Limits) { l.MaxLivePerTarget = 10; l.MaxLivePerRequester = 11 },
			wantErr: "max-live-requests-per-target 10 must be at least"},
		{name: "live caps of one", mod: func(l *policy.Limits) { l.MaxLivePerTarget, l.MaxLivePerRequester = 1, 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := policy.DefaultLimits()
			tt.mod(&l)
			err := l.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckLive(t *testing.T) {
	l := policy.DefaultLimits()
	l.MaxLivePerRequester, l.MaxLivePerTarget = 2, 3
	tests := []struct {
		name          string
		before, after policy.Live
		wantLimit     string
	}{
		{name: "below both caps", before: policy.Live{Requester: 0, Target: 0}, after: policy.Live{Requester: 1, Target: 1}},
		{name: "reaching the requester cap", before: policy.Live{Requester: 1, Target: 1}, after: policy.Live{Requester: 2, Target: 2}},
		{name: "past the requester cap", before: policy.Live{Requester: 2, Target: 2}, after: policy.Live{Requester: 3, Target: 3},
			wantLimit: policy.LimitLivePerRequester},
		{name: "past the target cap", before: policy.Live{Requester: 0, Target: 3}, after: policy.Live{Requester: 1, Target: 4},
			wantLimit: policy.LimitLivePerTarget},
		{name: "an extension at the cap adds nothing", before: policy.Live{Requester: 2, Target: 3}, after: policy.Live{Requester: 2, Target: 3}},
		{name: "an extension merging two requests", before: policy.Live{Requester: 2, Target: 3}, after: policy.Live{Requester: 1, Target: 2}},
		{name: "above a lowered cap without growth", before: policy.Live{Requester: 5, Target: 5}, after: policy.Live{Requester: 5, Target: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.CheckLive("alice", "web-01", tt.before, tt.after)
			var le *policy.LimitError
			switch {
			case tt.wantLimit == "" && err != nil:
				t.Fatalf("CheckLive = %v, want nil", err)
			case tt.wantLimit == "":
			case !errors.As(err, &le) || le.Limit != tt.wantLimit:
				t.Fatalf("CheckLive = %v, want a *LimitError of %s", err, tt.wantLimit)
			case !strings.Contains(err.Error(), tt.wantLimit) || !strings.Contains(err.Error(), "web-01"):
				t.Errorf("message %q names neither the limit nor the target", err)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name   string
		limits policy.Limits
		in     policy.Policy
		want   policy.Policy
	}{
		{
			name:   "defaults filled",
			limits: policy.DefaultLimits(),
			in:     policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22}}}},
			want: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), MaxDuration: 3 * time.Hour},
			}},
		},
		{
			name:   "explicit values kept",
			limits: policy.DefaultLimits(),
			in: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), AllowedSources: pfxs("192.0.2.0/24"), MaxDuration: time.Hour},
				{Port: udp(53), MaxDuration: 30 * time.Minute},
				{Port: tcp(443), AllowedSources: pfxs("2001:db8::/32", "10.0.0.0/8")},
			}},
			want: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), AllowedSources: pfxs("192.0.2.0/24"), MaxDuration: time.Hour},
				{Port: udp(53), MaxDuration: 30 * time.Minute},
				{Port: tcp(443), AllowedSources: pfxs("2001:db8::/32", "10.0.0.0/8"), MaxDuration: 3 * time.Hour},
			}},
		},
		{
			name:   "same number, different protocols",
			limits: policy.DefaultLimits(),
			in: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(53)}, {Port: udp(53)},
			}},
			want: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(53), MaxDuration: 3 * time.Hour},
				{Port: udp(53), MaxDuration: 3 * time.Hour},
			}},
		},
		{
			name:   "prefixes masked and unmapped",
			limits: policy.DefaultLimits(),
			in: policy.Policy{Rules: []policy.Rule{{
				Port: tcp(22),
				AllowedSources: pfxs(
					"192.0.2.7/24",
					"::ffff:198.51.100.9/120",
					"::ffff:203.0.113.5/128",
					"2001:db8::1/32",
				),
			}}},
			want: policy.Policy{Rules: []policy.Rule{{
				Port:           tcp(22),
				AllowedSources: pfxs("192.0.2.0/24", "198.51.100.0/24", "203.0.113.5/32", "2001:db8::/32"),
				MaxDuration:    3 * time.Hour,
			}}},
		},
		{
			name:   "bounds inclusive",
			limits: policy.DefaultLimits(),
			in: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), MaxDuration: 5 * time.Minute},
				{Port: tcp(23), MaxDuration: 24 * time.Hour},
			}},
			want: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), MaxDuration: 5 * time.Minute},
				{Port: tcp(23), MaxDuration: 24 * time.Hour},
			}},
		},
		{
			name: "custom default",
			limits: policy.Limits{
				MinRuleDuration: time.Minute, MaxRuleDuration: 2 * time.Hour, DefaultRuleDuration: time.Hour,
				MinRequestDuration: time.Second, PerRequestBits4: 32, PerRequestBits6: 128,
			},
			in:   policy.Policy{Rules: []policy.Rule{{Port: udp(500)}}},
			want: policy.Policy{Rules: []policy.Rule{{Port: udp(500), MaxDuration: time.Hour}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.limits.Normalize(tt.in)
			if err != nil {
				t.Fatalf("Normalize() error: %v", err)
			}
			// A rule without an approval mode is auto-approved.
			for i := range tt.want.Rules {
				if tt.want.Rules[i].Approval.Mode == "" {
					tt.want.Rules[i].Approval.Mode = policy.Auto
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
				t.Errorf("Normalize() mismatch (-want +got):\n%s", diff)
			}
			// Normalizing is idempotent.
			again, err := tt.limits.Normalize(got)
			if err != nil {
				t.Fatalf("Normalize(Normalize()) error: %v", err)
			}
			if !again.Equal(got) {
				t.Errorf("Normalize is not idempotent: %+v then %+v", got, again)
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	tests := []struct {
		name       string
		in         policy.Policy
		wantField  string
		wantReason string
	}{
		{
			name:      "nil rules",
			in:        policy.Policy{},
			wantField: "rules", wantReason: "at least one port rule",
		},
		{
			name:      "empty rules",
			in:        policy.Policy{Rules: []policy.Rule{}},
			wantField: "rules", wantReason: "at least one port rule",
		},
		{
			name:      "port zero",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(0)}}},
			wantField: "rules[0].port", wantReason: "1 to 65535",
		},
		{
			name:      "port zero in second rule",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22)}, {Port: udp(0)}}},
			wantField: "rules[1].port", wantReason: "1 to 65535",
		},
		{
			name:      "mapped port below the gateways' range",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22), Publish: true, MappedPort: 22}}},
			wantField: "rules[0].mapped_port", wantReason: "22 is outside the range 20000-29999",
		},
		{
			name:      "mapped port above the gateways' range",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22)}, {Port: tcp(3389), Publish: true, MappedPort: 30000}}},
			wantField: "rules[1].mapped_port", wantReason: "30000 is outside the range 20000-29999",
		},
		{
			name:      "mapped port without publish",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MappedPort: 20022}}},
			wantField: "rules[0].mapped_port", wantReason: "only a published port",
		},
		{
			name:      "bad protocol",
			in:        policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: "icmp"}}}},
			wantField: "rules[0].protocol", wantReason: "tcp or udp",
		},
		{
			name:      "duplicate port",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22)}, {Port: tcp(22)}}},
			wantField: "rules[1]", wantReason: "port 22/tcp is configured twice",
		},
		{
			name:      "duplicate port after protocol default",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(80)}, {Port: tcp(22)}, {Port: policy.Port{Number: 22}}}},
			wantField: "rules[2]", wantReason: "port 22/tcp is configured twice",
		},
		{
			name:      "max duration below min",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: 5*time.Minute - time.Nanosecond}}},
			wantField: "rules[0].max_duration", wantReason: "4m59.999999999s is outside 5m0s to 24h0m0s",
		},
		{
			name:      "max duration above max",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: 24*time.Hour + time.Nanosecond}}},
			wantField: "rules[0].max_duration", wantReason: "24h0m0.000000001s is outside 5m0s to 24h0m0s",
		},
		{
			name:      "max duration negative",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: -time.Hour}}},
			wantField: "rules[0].max_duration", wantReason: "is outside",
		},
		{
			name: "max duration in second rule",
			in: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), MaxDuration: time.Hour},
				{Port: tcp(23), MaxDuration: time.Minute},
			}},
			wantField: "rules[1].max_duration", wantReason: "1m0s is outside",
		},
		{
			name:      "zero prefix",
			in:        policy.Policy{Rules: []policy.Rule{{Port: tcp(22), AllowedSources: []netip.Prefix{{}}}}},
			wantField: "rules[0].allowed_sources[0]", wantReason: "not a valid CIDR prefix",
		},
		{
			name: "invalid prefix after valid ones",
			in: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22)},
				{Port: tcp(23), AllowedSources: []netip.Prefix{
					pfx("192.0.2.0/24"),
					netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 33),
				}},
			}},
			wantField: "rules[1].allowed_sources[1]", wantReason: "not a valid CIDR prefix",
		},
		{
			name: "invalid IPv6 prefix",
			in: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), AllowedSources: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("2001:db8::"), 129)}},
			}},
			wantField: "rules[0].allowed_sources[0]", wantReason: "not a valid CIDR prefix",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policy.DefaultLimits().Normalize(tt.in)
			wantFieldError(t, err, tt.wantField, tt.wantReason)
			if got.Rules != nil {
				t.Errorf("Normalize() returned %+v with its error, want zero Policy", got)
			}
		})
	}
}

func TestNormalizeDoesNotModifyInput(t *testing.T) {
	in := policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22}, AllowedSources: pfxs("192.0.2.7/24", "::ffff:198.51.100.1/128")},
	}}
	before := policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22}, AllowedSources: pfxs("192.0.2.7/24", "::ffff:198.51.100.1/128")},
	}}
	if _, err := policy.DefaultLimits().Normalize(in); err != nil {
		t.Fatalf("Normalize() error: %v", err)
	}
	if diff := cmp.Diff(before, in, cmpOpts); diff != "" {
		t.Errorf("Normalize modified its input (-before +after):\n%s", diff)
	}
}

// TestNormalizeProtocolCase documents a known bug: Normalize accepts a
// protocol in any case (it validates with ParseProtocol) but keeps the
// original spelling, so "TCP" survives normalisation. Such a rule never
// matches a request for 22/tcp, and {22,"TCP"} and {22,"tcp"} are not seen as
// duplicates.
func TestNormalizeProtocolCase(t *testing.T) {
	l := policy.DefaultLimits()
	got, err := l.Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: "TCP"}}}})
	if err != nil {
		t.Fatalf("Normalize() error: %v", err)
	}
	if p := got.Rules[0].Protocol; p != policy.TCP {
		t.Errorf("Normalize() protocol = %q, want %q", p, policy.TCP)
	}
	if err := l.Evaluate(got, policy.Request{Ports: []policy.Port{tcp(22)}, Source: pfx("192.0.2.7/32"), Duration: time.Hour}); err != nil {
		t.Errorf("Evaluate(22/tcp) against a normalized \"22/TCP\" rule = %v, want nil", err)
	}
	_, err = l.Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: policy.Port{Number: 22, Protocol: "TCP"}},
		{Port: tcp(22)},
	}})
	wantFieldError(t, err, "rules[1]", "configured twice")
}

func TestEvaluate(t *testing.T) {
	limits := policy.DefaultLimits()
	pol, err := limits.Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), AllowedSources: pfxs("192.0.2.0/24", "2001:db8::/32"), MaxDuration: time.Hour},
		{Port: udp(53)}, // per request, default 3h
		{Port: tcp(443), AllowedSources: pfxs("10.0.0.0/8"), MaxDuration: 30 * time.Minute},
	}})
	if err != nil {
		t.Fatalf("Normalize() error: %v", err)
	}
	wide := limits
	wide.PerRequestBits4, wide.PerRequestBits6 = 24, 64

	ports := func(ps ...policy.Port) []policy.Port { return ps }
	type want struct {
		field  string // a *FieldError for this field
		deny   bool   // a *DenyError
		rule   string // DenyError.Rule
		reason string // the exact reason; "" skips the check
	}
	tests := []struct {
		name     string
		limits   policy.Limits // zero: DefaultLimits
		pol      policy.Policy // no rules: the policy above, unless noPolicy
		noPolicy bool          // evaluate against a policy without rules
		req      policy.Request
		want     *want // nil: allowed
	}{
		// Malformed requests.
		{
			name: "no ports",
			req:  policy.Request{Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{field: "ports", reason: "name at least one port"},
		},
		{
			name: "empty ports slice",
			req:  policy.Request{Ports: []policy.Port{}, Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{field: "ports", reason: "name at least one port"},
		},
		{
			name:     "no ports on empty policy",
			noPolicy: true,
			req:      policy.Request{Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want:     &want{field: "ports", reason: "name at least one port"},
		},
		{
			name: "invalid source",
			req:  policy.Request{Ports: ports(tcp(22)), Duration: time.Minute},
			want: &want{field: "source", reason: "must be an address or CIDR prefix"},
		},
		{
			name: "zero duration",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32")},
			want: &want{field: "duration", reason: "0s is shorter than the minimum of 1s"},
		},
		{
			name: "half a second",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: 500 * time.Millisecond},
			want: &want{field: "duration", reason: "500ms is shorter than the minimum of 1s"},
		},
		{
			name: "just under a second",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Second - time.Nanosecond},
			want: &want{field: "duration", reason: "999.999999ms is shorter than the minimum of 1s"},
		},
		{
			name: "negative duration",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: -time.Hour},
			want: &want{field: "duration", reason: "-1h0m0s is shorter than the minimum of 1s"},
		},
		{
			name: "reason too long",
			req: policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Minute,
				Reason: strings.Repeat("x", policy.MaxReasonLen+1)},
			want: &want{field: "reason", reason: "at most 1000 characters"},
		},
		{
			name: "reason at the limit",
			req: policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Minute,
				Reason: strings.Repeat("x", policy.MaxReasonLen)},
		},
		{
			name: "duplicate ports",
			req:  policy.Request{Ports: ports(tcp(22), tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{field: "ports", reason: "port 22/tcp is named twice"},
		},
		{
			name: "duplicate ports not adjacent",
			req:  policy.Request{Ports: ports(udp(53), tcp(22), udp(53)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{field: "ports", reason: "port 53/udp is named twice"},
		},
		// Policy-level refusals.
		{
			name:     "policy with no rules",
			noPolicy: true,
			req:      policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want:     &want{deny: true, rule: "", reason: "the target has no JIT policy"},
		},
		{
			name: "port not configured",
			req:  policy.Request{Ports: ports(tcp(80)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "80/tcp", reason: "the target's policy does not configure this port"},
		},
		{
			name: "protocol not configured",
			req:  policy.Request{Ports: ports(udp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/udp", reason: "the target's policy does not configure this port"},
		},
		// Durations.
		{
			name: "one second",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Second},
		},
		{
			name: "equal to max",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Hour},
		},
		{
			name: "above max",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Hour + time.Nanosecond},
			want: &want{deny: true, rule: "22/tcp", reason: "duration 1h0m0.000000001s exceeds the maximum of 1h0m0s"},
		},
		{
			name: "default max on per-request rule",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("192.0.2.7/32"), Duration: 3 * time.Hour},
		},
		{
			name: "above default max on per-request rule",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("192.0.2.7/32"), Duration: 3*time.Hour + time.Second},
			want: &want{deny: true, rule: "53/udp", reason: "duration 3h0m1s exceeds the maximum of 3h0m0s"},
		},
		// Allowed sources.
		{
			name: "/32 inside allowed /24",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
		},
		{
			name: "equal to allowed /24",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.0/24"), Duration: time.Minute},
		},
		{
			name: "unmasked /24 inside allowed /24",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.99/24"), Duration: time.Minute},
		},
		{
			name: "IPv6 inside second allowed prefix",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("2001:db8:1::/48"), Duration: time.Minute},
		},
		{
			name: "mapped /128 inside allowed IPv4 /24",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("::ffff:192.0.2.7/128"), Duration: time.Minute},
		},
		{
			name: "/16 around allowed /24",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.0.0/16"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp",
				reason: "source 192.0.0.0/16 is not inside any allowed prefix (192.0.2.0/24, 2001:db8::/32)"},
		},
		{
			name: "/23 overlapping allowed /24, masked in message",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.3.1/23"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp",
				reason: "source 192.0.2.0/23 is not inside any allowed prefix (192.0.2.0/24, 2001:db8::/32)"},
		},
		{
			name: "address outside",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("198.51.100.1/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp",
				reason: "source 198.51.100.1/32 is not inside any allowed prefix (192.0.2.0/24, 2001:db8::/32)"},
		},
		{
			name: "mapped address outside, unmapped in message",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("::ffff:198.51.100.1/128"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp",
				reason: "source 198.51.100.1/32 is not inside any allowed prefix (192.0.2.0/24, 2001:db8::/32)"},
		},
		{
			name: "IPv6 /31 around allowed /32",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("2001:db8::/31"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp",
				reason: "source 2001:db8::/31 is not inside any allowed prefix (192.0.2.0/24, 2001:db8::/32)"},
		},
		{
			name: "IPv4 whole space",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("0.0.0.0/0"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp"},
		},
		{
			name: "IPv6 whole space",
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("::/0"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp"},
		},
		{
			name: "allowed 0.0.0.0/0 admits any IPv4 but no IPv6",
			pol: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), AllowedSources: pfxs("0.0.0.0/0"), MaxDuration: time.Hour},
			}},
			req:  policy.Request{Ports: ports(tcp(22)), Source: pfx("2001:db8::1/128"), Duration: time.Minute},
			want: &want{deny: true, rule: "22/tcp", reason: "source 2001:db8::1/128 is not inside any allowed prefix (0.0.0.0/0)"},
		},
		{
			name: "allowed 0.0.0.0/0 admits 0.0.0.0/0",
			pol: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), AllowedSources: pfxs("0.0.0.0/0"), MaxDuration: time.Hour},
			}},
			req: policy.Request{Ports: ports(tcp(22)), Source: pfx("0.0.0.0/0"), Duration: time.Minute},
		},
		{
			name: "un-normalized policy prefixes are canonicalized",
			pol: policy.Policy{Rules: []policy.Rule{
				{Port: tcp(22), AllowedSources: pfxs("::ffff:192.0.2.77/120"), MaxDuration: time.Hour},
			}},
			req: policy.Request{Ports: ports(tcp(22)), Source: pfx("192.0.2.5/32"), Duration: time.Minute},
		},
		// Per-request rules, default limits /32 and /128.
		{
			name: "per-request /32",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("203.0.113.9/32"), Duration: time.Minute},
		},
		{
			name: "per-request /31",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("203.0.113.9/31"), Duration: time.Minute},
			want: &want{deny: true, rule: "53/udp", reason: "source 203.0.113.8/31 is wider than the per-request limit of /32"},
		},
		{
			name: "per-request /128",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("2001:db8::9/128"), Duration: time.Minute},
		},
		{
			name: "per-request /127",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("2001:db8::9/127"), Duration: time.Minute},
			want: &want{deny: true, rule: "53/udp", reason: "source 2001:db8::8/127 is wider than the per-request limit of /128"},
		},
		{
			name: "per-request IPv6 /32",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("2001:db8::/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "53/udp", reason: "source 2001:db8::/32 is wider than the per-request limit of /128"},
		},
		{
			name: "per-request mapped /128 is an IPv4 /32",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("::ffff:203.0.113.9/128"), Duration: time.Minute},
		},
		{
			name: "per-request mapped /127 is an IPv4 /31",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("::ffff:203.0.113.9/127"), Duration: time.Minute},
			want: &want{deny: true, rule: "53/udp", reason: "source 203.0.113.8/31 is wider than the per-request limit of /32"},
		},
		{
			name: "per-request 0.0.0.0/0",
			req:  policy.Request{Ports: ports(udp(53)), Source: pfx("0.0.0.0/0"), Duration: time.Minute},
			want: &want{deny: true, rule: "53/udp", reason: "source 0.0.0.0/0 is wider than the per-request limit of /32"},
		},
		// Per-request rules, configured limits /24 and /64.
		{
			name:   "configured limit /24 allows /24",
			limits: wide,
			req:    policy.Request{Ports: ports(udp(53)), Source: pfx("203.0.113.0/24"), Duration: time.Minute},
		},
		{
			name:   "configured limit /24 allows /32",
			limits: wide,
			req:    policy.Request{Ports: ports(udp(53)), Source: pfx("203.0.113.9/32"), Duration: time.Minute},
		},
		{
			name:   "configured limit /24 refuses /23",
			limits: wide,
			req:    policy.Request{Ports: ports(udp(53)), Source: pfx("203.0.112.0/23"), Duration: time.Minute},
			want:   &want{deny: true, rule: "53/udp", reason: "source 203.0.112.0/23 is wider than the per-request limit of /24"},
		},
		{
			name:   "configured limit /64 allows /64",
			limits: wide,
			req:    policy.Request{Ports: ports(udp(53)), Source: pfx("2001:db8:1:2::/64"), Duration: time.Minute},
		},
		{
			name:   "configured limit /64 refuses /63",
			limits: wide,
			req:    policy.Request{Ports: ports(udp(53)), Source: pfx("2001:db8:1:2::/63"), Duration: time.Minute},
			want:   &want{deny: true, rule: "53/udp", reason: "source 2001:db8:1:2::/63 is wider than the per-request limit of /64"},
		},
		{
			name:   "configured limit does not widen allowed sources",
			limits: wide,
			req:    policy.Request{Ports: ports(tcp(22)), Source: pfx("198.51.100.0/24"), Duration: time.Minute},
			want:   &want{deny: true, rule: "22/tcp"},
		},
		// Several ports.
		{
			name: "several ports all allowed",
			req:  policy.Request{Ports: ports(tcp(22), udp(53)), Source: pfx("192.0.2.7/32"), Duration: 30 * time.Minute},
		},
		{
			name: "second port refuses the source",
			req:  policy.Request{Ports: ports(tcp(22), tcp(443)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "443/tcp", reason: "source 192.0.2.7/32 is not inside any allowed prefix (10.0.0.0/8)"},
		},
		{
			name: "second port refuses the duration",
			req:  policy.Request{Ports: ports(udp(53), tcp(22)), Source: pfx("192.0.2.7/32"), Duration: 2 * time.Hour},
			want: &want{deny: true, rule: "22/tcp", reason: "duration 2h0m0s exceeds the maximum of 1h0m0s"},
		},
		{
			name: "second port not configured",
			req:  policy.Request{Ports: ports(tcp(22), tcp(8080)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "8080/tcp", reason: "the target's policy does not configure this port"},
		},
		{
			name: "first refusal wins",
			req:  policy.Request{Ports: ports(tcp(80), tcp(443)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "80/tcp"},
		},
		{
			name: "refusal before a later duplicate",
			req:  policy.Request{Ports: ports(tcp(443), tcp(443)), Source: pfx("192.0.2.7/32"), Duration: time.Minute},
			want: &want{deny: true, rule: "443/tcp"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.limits
			if l == (policy.Limits{}) {
				l = limits
			}
			p := tt.pol
			if p.Rules == nil && !tt.noPolicy {
				p = pol
			}
			err := l.Evaluate(p, tt.req)
			w := tt.want
			if w == nil {
				if err != nil {
					t.Fatalf("Evaluate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Evaluate() = nil, want an error")
			}
			if !w.deny {
				wantFieldError(t, err, w.field, w.reason)
				var de *policy.DenyError
				if errors.As(err, &de) {
					t.Errorf("Evaluate() error %v is also a *DenyError", err)
				}
				return
			}
			var de *policy.DenyError
			if !errors.As(err, &de) {
				t.Fatalf("Evaluate() = %v (%T), want *policy.DenyError", err, err)
			}
			if de.Rule != w.rule {
				t.Errorf("DenyError.Rule = %q, want %q", de.Rule, w.rule)
			}
			if w.reason != "" && de.Reason != w.reason {
				t.Errorf("DenyError.Reason = %q, want %q", de.Reason, w.reason)
			}
		})
	}
}

func TestDenyErrorMessage(t *testing.T) {
	tests := []struct {
		err  *policy.DenyError
		want string
	}{
		{&policy.DenyError{Reason: "the target has no JIT policy"}, "request refused: the target has no JIT policy"},
		{&policy.DenyError{Rule: "22/tcp", Reason: "nope"}, "request refused by rule 22/tcp: nope"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestPolicyRule(t *testing.T) {
	pol := policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), MaxDuration: time.Hour},
		{Port: udp(22), MaxDuration: 2 * time.Hour},
	}}
	tests := []struct {
		p      policy.Port
		want   policy.Rule
		wantOK bool
	}{
		{tcp(22), pol.Rules[0], true},
		{udp(22), pol.Rules[1], true},
		{tcp(23), policy.Rule{}, false},
		{policy.Port{Number: 22}, policy.Rule{}, false},
	}
	for _, tt := range tests {
		got, ok := pol.Rule(tt.p)
		if ok != tt.wantOK {
			t.Errorf("Rule(%v) ok = %v, want %v", tt.p, ok, tt.wantOK)
		}
		if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
			t.Errorf("Rule(%v) mismatch (-want +got):\n%s", tt.p, diff)
		}
	}
}

func TestPolicyEqual(t *testing.T) {
	base := func() policy.Policy {
		return policy.Policy{Rules: []policy.Rule{
			{Port: tcp(22), AllowedSources: pfxs("192.0.2.0/24", "2001:db8::/32"), MaxDuration: time.Hour},
			{Port: udp(53), MaxDuration: 3 * time.Hour},
		}}
	}
	tests := []struct {
		name string
		mod  func(*policy.Policy)
		want bool
	}{
		{name: "identical", mod: func(*policy.Policy) {}, want: true},
		{name: "nil vs empty sources", mod: func(p *policy.Policy) { p.Rules[1].AllowedSources = []netip.Prefix{} }, want: true},
		{name: "port number", mod: func(p *policy.Policy) { p.Rules[0].Number = 23 }},
		{name: "protocol", mod: func(p *policy.Policy) { p.Rules[1].Protocol = policy.TCP }},
		{name: "max duration", mod: func(p *policy.Policy) { p.Rules[0].MaxDuration++ }},
		{name: "source changed", mod: func(p *policy.Policy) { p.Rules[0].AllowedSources[1] = pfx("2001:db8::/33") }},
		{name: "source added", mod: func(p *policy.Policy) {
			p.Rules[0].AllowedSources = append(p.Rules[0].AllowedSources, pfx("10.0.0.0/8"))
		}},
		{name: "source removed", mod: func(p *policy.Policy) { p.Rules[0].AllowedSources = p.Rules[0].AllowedSources[:1] }},
		{name: "sources reordered", mod: func(p *policy.Policy) {
			s := p.Rules[0].AllowedSources
			s[0], s[1] = s[1], s[0]
		}},
		{name: "rules reordered", mod: func(p *policy.Policy) { p.Rules[0], p.Rules[1] = p.Rules[1], p.Rules[0] }},
		{name: "rule removed", mod: func(p *policy.Policy) { p.Rules = p.Rules[:1] }},
		{name: "rule added", mod: func(p *policy.Policy) { p.Rules = append(p.Rules, policy.Rule{Port: tcp(443)}) }},
		{name: "no rules", mod: func(p *policy.Policy) { p.Rules = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := base(), base()
			tt.mod(&b)
			if got := a.Equal(b); got != tt.want {
				t.Errorf("a.Equal(b) = %v, want %v", got, tt.want)
			}
			if got := b.Equal(a); got != tt.want {
				t.Errorf("b.Equal(a) = %v, want %v", got, tt.want)
			}
		})
	}
	if !(policy.Policy{}).Equal(policy.Policy{Rules: []policy.Rule{}}) {
		t.Error("nil rules and empty rules should be equal")
	}
}

func TestValidateTargetName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"0", true},
		{"web", true},
		{"web-1", true},
		{"db--primary", true},
		{"1a", true},
		{strings.Repeat("a", 63), true},
		{"a" + strings.Repeat("-", 61) + "a", true},
		{"", false},
		{"-", false},
		{"-web", false},
		{"web-", false},
		{"Web", false},
		{"web_1", false},
		{"web.example", false},
		{"web 1", false},
		{" web", false},
		{"web\n", false},
		{"\nweb", false},
		{"wéb", false},
		{strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		err := policy.ValidateTargetName(tt.name)
		if tt.ok {
			if err != nil {
				t.Errorf("ValidateTargetName(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ValidateTargetName(%q) = nil, want error", tt.name)
			continue
		}
		wantFieldError(t, err, "name", "must be a DNS label")
	}
}

func TestValidateLabels(t *testing.T) {
	tests := []struct {
		name       string
		labels     map[string]string
		wantReason string // "" means valid
	}{
		{name: "nil", labels: nil},
		{name: "empty", labels: map[string]string{}},
		{name: "simple", labels: map[string]string{"env": "prod", "team": "Platform-1"}},
		{name: "key punctuation", labels: map[string]string{"app.kubernetes.io/name": "x", "a_b-c": "y"}},
		{name: "single-char key", labels: map[string]string{"a": "b"}},
		{name: "empty value", labels: map[string]string{"env": ""}},
		{name: "63-char key", labels: map[string]string{strings.Repeat("k", 63): "v"}},
		{name: "63-char value", labels: map[string]string{"env": strings.Repeat("v", 63)}},
		{name: "value punctuation", labels: map[string]string{"env": "a:b;c/d.e_f-g"}},
		{name: "empty key", labels: map[string]string{"": "v"}, wantReason: `key ""`},
		{name: "upper-case key", labels: map[string]string{"Env": "v"}, wantReason: `key "Env"`},
		{name: "key starts with dash", labels: map[string]string{"-env": "v"}, wantReason: `key "-env"`},
		{name: "key ends with dot", labels: map[string]string{"env.": "v"}, wantReason: `key "env."`},
		{name: "key ends with slash", labels: map[string]string{"env/": "v"}, wantReason: `key "env/"`},
		{name: "key with space", labels: map[string]string{"my env": "v"}, wantReason: "key"},
		{name: "key with newline", labels: map[string]string{"env\n": "v"}, wantReason: "key"},
		{name: "64-char key", labels: map[string]string{strings.Repeat("k", 64): "v"}, wantReason: "key"},
		{name: "64-char value", labels: map[string]string{"env": strings.Repeat("v", 64)}, wantReason: `of "env"`},
		{name: "value with space", labels: map[string]string{"env": "pr od"}, wantReason: `value "pr od"`},
		{name: "value with tab", labels: map[string]string{"env": "pr\tod"}, wantReason: "value"},
		{name: "value with newline", labels: map[string]string{"env": "prod\n"}, wantReason: "value"},
		{name: "value with comma", labels: map[string]string{"env": "a,b"}, wantReason: "value"},
		{name: "value with equals", labels: map[string]string{"env": "a=b"}, wantReason: "value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := policy.ValidateLabels(tt.labels)
			if tt.wantReason == "" {
				if err != nil {
					t.Errorf("ValidateLabels(%q) = %v, want nil", tt.labels, err)
				}
				return
			}
			wantFieldError(t, err, "labels", tt.wantReason)
		})
	}
}

// FuzzParsePort checks that ParsePort never panics, accepts only ports 1-65535
// with a known protocol, and that an accepted port round-trips through String.
func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"22", "22/tcp", "53/UDP", "0", "65535", "65536", "-1", "22/icmp", "", " 22 ", "22/", "/udp", "1/tcp/udp", "0022/Tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := policy.ParsePort(s)
		if err != nil {
			if p != (policy.Port{}) {
				t.Fatalf("ParsePort(%q) = %+v with error %v, want zero Port", s, p, err)
			}
			return
		}
		if p.Number == 0 {
			t.Fatalf("ParsePort(%q) accepted port 0", s)
		}
		if p.Protocol != policy.TCP && p.Protocol != policy.UDP {
			t.Fatalf("ParsePort(%q) protocol = %q", s, p.Protocol)
		}
		q, err := policy.ParsePort(p.String())
		if err != nil {
			t.Fatalf("ParsePort(%q) = %v, but ParsePort(%q) fails: %v", s, p, p.String(), err)
		}
		if q != p {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v", s, p, p.String(), q)
		}
	})
}

// FuzzParsePrefix checks that ParsePrefix never panics and that what it
// accepts is valid, masked, canonical, zoneless, contains itself and
// round-trips through String.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{
		"192.0.2.7", "192.0.2.7/24", "2001:db8::1", "2001:db8::1/32", "::ffff:192.0.2.7/120",
		"::ffff:192.0.2.7", "::ffff:1.2.3.4/64", "0.0.0.0/0", "::/0", "fe80::1%eth0", "fe80::1%eth0/64",
		"", "garbage", "1.2.3.4/33", " 10.0.0.0/8 ", "::ffff:0:0/96",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := policy.ParsePrefix(s)
		if err != nil {
			if p != (netip.Prefix{}) {
				t.Fatalf("ParsePrefix(%q) = %v with error %v, want zero Prefix", s, p, err)
			}
			return
		}
		if !p.IsValid() {
			t.Fatalf("ParsePrefix(%q) = invalid %#v", s, p)
		}
		if p != p.Masked() {
			t.Fatalf("ParsePrefix(%q) = %v, not masked (%v)", s, p, p.Masked())
		}
		if c := policy.Canonical(p); c != p {
			t.Fatalf("ParsePrefix(%q) = %v, not canonical (%v)", s, p, c)
		}
		if p.Addr().Is4In6() {
			t.Fatalf("ParsePrefix(%q) = %v, still IPv4-mapped", s, p)
		}
		if p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v, has a zone", s, p)
		}
		if !policy.Contains(p, p) {
			t.Fatalf("Contains(%v, %v) = false", p, p)
		}
		q, err := policy.ParsePrefix(p.String())
		if err != nil || q != p {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, p, p.String(), q, err)
		}
	})
}

// fuzzPrefix builds a prefix from fuzz input: an IPv4 address from the first
// four bytes of b when v4, else an IPv6 address from its first sixteen, and a
// length reduced modulo the address size plus one.
func fuzzPrefix(b []byte, v4 bool, bits uint8) netip.Prefix {
	var a16 [16]byte
	copy(a16[:], b)
	a := netip.AddrFrom16(a16)
	if v4 {
		a = netip.AddrFrom4([4]byte(a16[:4]))
	}
	return netip.PrefixFrom(a, int(bits)%(a.BitLen()+1))
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// inPrefix reports whether address x lies in p, treating an IPv4 address and
// its IPv4-mapped IPv6 form as the same address. It is a reference that does
// not use the package under test.
func inPrefix(p netip.Prefix, x netip.Addr) bool {
	p = p.Masked()
	return p.Contains(x) || p.Contains(x.Unmap()) || (x.Is4() && p.Contains(netip.AddrFrom16(x.As16())))
}

// FuzzEvaluate builds a one-rule policy with up to two allowed prefixes (or
// none: per request) and a request for a source prefix. Evaluate must never
// panic, and when it allows a source for a rule with allowed sources, the
// first and the last address of the source must lie inside an allowed prefix.
func FuzzEvaluate(f *testing.F) {
	type seed struct {
		a1   string
		b1   uint8
		a2   string
		b2   uint8
		two  bool
		src  string
		sb   uint8
		none bool
	}
	seeds := []seed{
		{"192.0.2.0", 24, "2001:db8::", 32, true, "192.0.2.7", 32, false},
		{"192.0.2.0", 24, "::", 0, false, "192.0.0.0", 16, false},
		{"0.0.0.0", 0, "::", 0, true, "203.0.113.9", 32, false},
		{"::ffff:192.0.2.0", 120, "::", 0, false, "192.0.2.7", 32, false},
		{"192.0.2.0", 24, "::", 0, false, "::ffff:192.0.2.7", 128, false},
		{"10.0.0.0", 8, "::", 0, false, "::ffff:10.1.2.3", 104, false},
		{"192.0.2.0", 24, "::", 0, false, "203.0.113.9", 31, true},
		{"2001:db8::", 32, "::", 0, false, "2001:db8::1", 128, true},
	}
	for _, s := range seeds {
		a1, a2, src := netip.MustParseAddr(s.a1), netip.MustParseAddr(s.a2), netip.MustParseAddr(s.src)
		a1b, a2b, srcb := a1.As16(), a2.As16(), src.As16()
		if a1.Is4() {
			a1b = [16]byte(append(a1.AsSlice(), make([]byte, 12)...))
		}
		if a2.Is4() {
			a2b = [16]byte(append(a2.AsSlice(), make([]byte, 12)...))
		}
		if src.Is4() {
			srcb = [16]byte(append(src.AsSlice(), make([]byte, 12)...))
		}
		f.Add(a1b[:], a1.Is4(), s.b1, a2b[:], a2.Is4(), s.b2, s.two, srcb[:], src.Is4(), s.sb, s.none)
	}
	limits := policy.DefaultLimits()
	f.Fuzz(func(t *testing.T,
		a1 []byte, v41 bool, b1 uint8,
		a2 []byte, v42 bool, b2 uint8, two bool,
		sa []byte, sv4 bool, sb uint8, none bool,
	) {
		var allowed []netip.Prefix
		if !none {
			allowed = append(allowed, fuzzPrefix(a1, v41, b1))
			if two {
				allowed = append(allowed, fuzzPrefix(a2, v42, b2))
			}
		}
		pol := policy.Policy{Rules: []policy.Rule{{Port: tcp(22), AllowedSources: allowed, MaxDuration: time.Hour}}}
		src := fuzzPrefix(sa, sv4, sb)
		req := policy.Request{Ports: []policy.Port{tcp(22)}, Source: src, Duration: time.Minute}

		err := limits.Evaluate(pol, req)
		if norm, nerr := limits.Normalize(pol); nerr == nil {
			// Normalizing the policy must not change the decision.
			if nerrEval := limits.Evaluate(norm, req); (nerrEval == nil) != (err == nil) {
				t.Fatalf("Evaluate(%v, %v) = %v, but with the normalized policy %v", allowed, src, err, nerrEval)
			}
		}
		if err != nil {
			var de *policy.DenyError
			if !errors.As(err, &de) || de.Rule != "22/tcp" {
				t.Fatalf("Evaluate(%v, %v) = %v, want nil or a DenyError for 22/tcp", allowed, src, err)
			}
			return
		}
		c := policy.Canonical(src)
		if none {
			limit := limits.PerRequestBits4
			if c.Addr().Is6() {
				limit = limits.PerRequestBits6
			}
			if c.Bits() < limit {
				t.Fatalf("Evaluate allowed per-request source %v (%v) wider than /%d", src, c, limit)
			}
			return
		}
		// Known bug (see TestCanonicalMappedShortPrefix): an IPv4-mapped
		// source shorter than /96 is judged as 0.0.0.0/0, not as the IPv6
		// prefix it denotes. Check the prefix Evaluate actually judged.
		if src.Addr().Is4In6() && src.Bits() < 96 {
			src = c
		}
		for _, x := range []netip.Addr{src.Masked().Addr(), lastAddr(src)} {
			inside := false
			for _, a := range allowed {
				if inPrefix(a, x) {
					inside = true
					break
				}
			}
			if !inside {
				t.Fatalf("Evaluate allowed source %v (%v), but address %v is not inside any of %v", src, c, x, allowed)
			}
		}
	})
}

func TestApprovalAndJustification(t *testing.T) {
	l := policy.DefaultLimits()
	tests := []struct {
		name      string
		rule      policy.Rule
		wantField string // Normalize error field, or "" for ok
	}{
		{"manual defaults to one approval", policy.Rule{Port: tcp(22), Approval: policy.Approval{Mode: policy.Manual}}, ""},
		{"manual two", policy.Rule{Port: tcp(22), Approval: policy.Approval{Mode: policy.Manual, Approvals: 2}}, ""},
		{"manual too many", policy.Rule{Port: tcp(22), Approval: policy.Approval{Mode: policy.Manual, Approvals: 11}}, "rules[0].approval.approvals"},
		{"auto with a count", policy.Rule{Port: tcp(22), Approval: policy.Approval{Mode: policy.Auto, Approvals: 2}}, "rules[0].approval.approvals"},
		{"unknown mode", policy.Rule{Port: tcp(22), Approval: policy.Approval{Mode: "maybe"}}, "rules[0].approval.mode"},
		{"bad pattern", policy.Rule{Port: tcp(22), Justification: policy.Justification{Pattern: "(("}}, "rules[0].justification.pattern"},
		{"negative min length", policy.Rule{Port: tcp(22), Justification: policy.Justification{MinLength: -1}}, "rules[0].justification.min_length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Normalize(policy.Policy{Rules: []policy.Rule{tt.rule}})
			var fe *policy.FieldError
			switch {
			case tt.wantField == "" && err != nil:
				t.Fatalf("Normalize() error: %v", err)
			case tt.wantField != "" && (!errors.As(err, &fe) || fe.Field != tt.wantField):
				t.Fatalf("Normalize() error = %v, want a FieldError on %s", err, tt.wantField)
			case tt.wantField == "" && got.Rules[0].Approval.Mode == policy.Manual && got.Rules[0].Approval.Approvals < 1:
				t.Fatalf("manual rule normalised to %d approvals", got.Rules[0].Approval.Approvals)
			}
		})
	}

	pol, err := l.Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), Approval: policy.Approval{Mode: policy.Manual, Approvals: 2},
			Justification: policy.Justification{Required: true, MinLength: 8, Pattern: `^(INC|CHG)-[0-9]+`}},
		{Port: tcp(3389), Approval: policy.Approval{Mode: policy.Manual}},
		{Port: tcp(5985)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ports []policy.Port
		want  int
	}{{[]policy.Port{tcp(5985)}, 0}, {[]policy.Port{tcp(3389)}, 1}, {[]policy.Port{tcp(3389), tcp(22)}, 2}, {[]policy.Port{tcp(5985), tcp(3389)}, 1}} {
		if got := pol.ApprovalsRequired(tc.ports); got != tc.want {
			t.Errorf("ApprovalsRequired(%v) = %d, want %d", tc.ports, got, tc.want)
		}
	}
	src := netip.MustParsePrefix("192.0.2.7/32")
	for _, tc := range []struct {
		reason string
		want   string // substring of the DenyError, or "" for allowed
	}{
		{"", "a reason is required"},
		{"INC-1", "at least 8 characters"},
		{"fix the disk", "must match"},
		{"INC-12345 disk full", ""},
	} {
		err := l.Evaluate(pol, policy.Request{Ports: []policy.Port{tcp(22)}, Source: src, Duration: time.Hour, Reason: tc.reason})
		var de *policy.DenyError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("reason %q refused: %v", tc.reason, err)
		case tc.want != "" && (!errors.As(err, &de) || de.Rule != "22/tcp" || !strings.Contains(de.Error(), tc.want)):
			t.Errorf("reason %q: error %v, want a refusal by 22/tcp saying %q", tc.reason, err, tc.want)
		}
	}
}
