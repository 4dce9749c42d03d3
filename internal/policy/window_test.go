package policy_test

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

func TestParseWindow(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "Mon-Fri 08:00-18:00 Europe/Berlin", want: "Mon-Fri 08:00-18:00 Europe/Berlin"},
		{in: "mon,wed,FRI 08:00-18:00 UTC", want: "Mon,Wed,Fri 08:00-18:00 UTC"},
		{in: "Mon-Wed,Fri 22:00-06:00 America/New_York", want: "Mon-Wed,Fri 22:00-06:00 America/New_York"},
		{in: "Sat,Sun 00:00-24:00 UTC", want: "Sat,Sun 00:00-24:00 UTC"},
		{in: "Mon,Tue 09:00-10:00 UTC", want: "Mon,Tue 09:00-10:00 UTC"},
		{in: "Mon-Sun 09:00-10:00 UTC", want: "Mon-Sun 09:00-10:00 UTC"},
		{in: "  Fri-Sun,Mon   09:00-10:00   UTC ", want: "Mon,Fri-Sun 09:00-10:00 UTC"},
		{in: "Mon-Fri 08:00-18:00", err: "DAYS HH:MM-HH:MM ZONE"},
		{in: "Fri-Mon 08:00-18:00 UTC", err: "runs backwards"},
		{in: "Mon,Mon 08:00-18:00 UTC", err: "named twice"},
		{in: "Mon-Fri,Wed 08:00-18:00 UTC", err: "named twice"},
		{in: "Monday 08:00-18:00 UTC", err: "not a weekday"},
		{in: "Mon 8:00-18:00 UTC", err: "not a time HH:MM"},
		{in: "Mon 08:00-18:60 UTC", err: "not a time HH:MM"},
		{in: "Mon 24:00-06:00 UTC", err: "24:00 only as an end"},
		{in: "Mon 25:00-06:00 UTC", err: "from 00:00 to 23:59"},
		{in: "Mon 08:00 UTC", err: "HH:MM-HH:MM"},
		{in: "Mon 08:00-08:00 UTC", err: "same time"},
		{in: "Mon 08:00-18:00 Local", err: "IANA zone"},
		{in: "Mon 08:00-18:00 CET", err: "IANA zone"},
		{in: "Mon 08:00-18:00 Europe/Atlantis", err: "not a known IANA zone"},
		// Hostile or odd input: signs are not digits, paths are not zones.
		{in: "Mon +8:00-18:00 UTC", err: "not a time HH:MM"},
		{in: "Mon 08:00-+9:00 UTC", err: "not a time HH:MM"},
		{in: "Mon 08:+0-18:00 UTC", err: "not a time HH:MM"},
		{in: "Mon ０8:00-18:00 UTC", err: "not a time HH:MM"},
		{in: "Mon 08:00-18:00 ../../etc/passwd", err: "not a known IANA zone"},
		{in: "Mon 08:00-18:00 /etc/localtime", err: "not a known IANA zone"},
		{in: "Mon 08:00-18:00 Etc/GMT+14", err: "not a known IANA zone"},
		{in: "Mon 24:00-24:00 UTC", err: "24:00 only as an end"},
		{in: "Mon 08:00-18:00 Etc/GMT-14", want: "Mon 08:00-18:00 Etc/GMT-14"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := policy.ParseWindow(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseWindow(%q) = %v, %v; want an error containing %q", tt.in, w, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := w.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			// The canonical form parses back to itself.
			if w2, err := policy.ParseWindow(w.String()); err != nil || w2.String() != tt.want {
				t.Errorf("round trip = %v, %v", w2, err)
			}
		})
	}
}

func mustWindows(t *testing.T, ss ...string) policy.Windows {
	t.Helper()
	ws, err := policy.ParseWindows("windows", ss)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestWindowsOpenAt walks instants around windows: inside, on the edges
// (the start is inside, the end is not), overnight, adjoining windows.
func TestWindowsOpenAt(t *testing.T) {
	tests := []struct {
		name    string
		windows []string
		at      string
		open    bool
		end     string // when open
		next    string // when closed
	}{
		// 2026-12-07 is a Monday; Berlin is UTC+1 in winter.
		{"inside", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, "2026-12-07T10:00:00Z", true, "2026-12-07T17:00:00Z", ""},
		{"at the start", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, "2026-12-07T07:00:00Z", true, "2026-12-07T17:00:00Z", ""},
		{"at the end", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, "2026-12-07T17:00:00Z", false, "", "2026-12-08T07:00:00Z"},
		{"before", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, "2026-12-07T06:59:59Z", false, "", "2026-12-07T07:00:00Z"},
		{"friday evening", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, "2026-12-11T18:00:00Z", false, "", "2026-12-14T07:00:00Z"},
		{"weekend", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, "2026-12-12T12:00:00Z", false, "", "2026-12-14T07:00:00Z"},
		{"list", []string{"Mon,Wed 09:00-10:00 UTC"}, "2026-12-08T09:30:00Z", false, "", "2026-12-09T09:00:00Z"},
		{"overnight, evening", []string{"Fri 22:00-06:00 UTC"}, "2026-12-11T23:00:00Z", true, "2026-12-12T06:00:00Z", ""},
		{"overnight, morning after", []string{"Fri 22:00-06:00 UTC"}, "2026-12-12T05:59:00Z", true, "2026-12-12T06:00:00Z", ""},
		{"overnight, not the night before", []string{"Fri 22:00-06:00 UTC"}, "2026-12-11T05:00:00Z", false, "", "2026-12-11T22:00:00Z"},
		{"adjoining windows clip at the later end", []string{"Mon 08:00-12:00 UTC", "Mon 12:00-18:00 UTC"}, "2026-12-07T09:00:00Z", true, "2026-12-07T18:00:00Z", ""},
		{"whole days run on", []string{"Sat,Sun 00:00-24:00 UTC"}, "2026-12-12T09:00:00Z", true, "2026-12-14T00:00:00Z", ""},
		{"overlapping windows, other zones", []string{"Mon 08:00-10:00 UTC", "Mon 10:30-12:00 Europe/Berlin"}, "2026-12-07T09:00:00Z", true, "2026-12-07T11:00:00Z", ""},
		{"New York", []string{"Mon-Fri 09:00-17:00 America/New_York"}, "2026-12-07T13:59:00Z", false, "", "2026-12-07T14:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := mustWindows(t, tt.windows...)
			open, end := ws.OpenAt(utc(tt.at))
			if open != tt.open {
				t.Fatalf("OpenAt(%s) = %v, want %v", tt.at, open, tt.open)
			}
			if open {
				if !end.Equal(utc(tt.end)) {
					t.Errorf("end = %s, want %s", end, tt.end)
				}
				return
			}
			if next := ws.NextOpening(utc(tt.at)); !next.Equal(utc(tt.next)) {
				t.Errorf("NextOpening = %s, want %s", next, tt.next)
			}
		})
	}
}

// TestWindowsAcrossDST runs the window arithmetic in a synctest bubble,
// whose clock moves only by sleeping: it sleeps to instants around
// Europe/Berlin's daylight-saving changes of 2026 (spring forward on
// Sunday 29 March at 02:00 CET, fall back on Sunday 25 October at 03:00
// CEST) and checks what the windows say at time.Now(), as the server does.
func TestWindowsAcrossDST(t *testing.T) {
	type check struct {
		at        string // UTC instant to sleep to
		open      bool
		remaining time.Duration // open: until the clip
		untilNext time.Duration // closed: until the next opening
	}
	tests := []struct {
		name    string
		windows []string
		checks  []check
	}{
		{"spring forward, window straddles the change", []string{"Sun 01:00-04:00 Europe/Berlin"}, []check{
			// 01:00 CET = 00:00Z; 04:00 CEST = 02:00Z: two hours, not three.
			{at: "2026-03-28T23:59:00Z", open: false, untilNext: time.Minute},
			{at: "2026-03-29T00:00:00Z", open: true, remaining: 2 * time.Hour},
			{at: "2026-03-29T01:30:00Z", open: true, remaining: 30 * time.Minute},
			// Next Sunday 01:00 CEST = 23:00Z on Saturday 4 April.
			{at: "2026-03-29T02:00:00Z", open: false, untilNext: 6*24*time.Hour + 21*time.Hour},
		}},
		{"spring forward, working hours the day after", []string{"Mon-Fri 08:00-18:00 Europe/Berlin"}, []check{
			// Friday 18:00 CET = 17:00Z; Monday 08:00 CEST = 06:00Z: the
			// weekend is an hour shorter.
			{at: "2026-03-27T17:00:00Z", open: false, untilNext: 2*24*time.Hour + 13*time.Hour},
			{at: "2026-03-30T06:00:00Z", open: true, remaining: 10 * time.Hour},
		}},
		{"spring forward, a start in the gap", []string{"Sun 02:30-05:00 Europe/Berlin"}, []check{
			// 02:30 does not exist that night: it means the jump, 01:00Z
			// (03:00 CEST), not 02:30 CET = 03:30 CEST, which would open
			// later than a window starting at 03:00; 05:00 CEST = 03:00Z.
			{at: "2026-03-29T00:59:00Z", open: false, untilNext: time.Minute},
			{at: "2026-03-29T01:00:00Z", open: true, remaining: 2 * time.Hour},
		}},
		{"spring forward, an end in the gap is the jump", []string{"Sun 00:00-02:30 Europe/Berlin"}, []check{
			// 00:00 CET = 23:00Z; the end 02:30 is the jump at 01:00Z, not
			// 03:30 CEST (it would outlast a window ending at 03:00).
			{at: "2026-03-28T23:00:00Z", open: true, remaining: 2 * time.Hour},
			{at: "2026-03-29T00:59:00Z", open: true, remaining: time.Minute},
			{at: "2026-03-29T01:00:00Z", open: false},
		}},
		{"spring forward, a window inside the gap is empty that night", []string{"Sun 02:00-02:59 Europe/Berlin"}, []check{
			// Next Sunday 02:00 CEST = 00:00Z on 5 April.
			{at: "2026-03-29T00:59:00Z", open: false, untilNext: 6*24*time.Hour + 23*time.Hour + time.Minute},
			{at: "2026-03-29T01:00:00Z", open: false},
		}},
		{"fall back, window straddles the change", []string{"Sun 01:00-04:00 Europe/Berlin"}, []check{
			// 01:00 CEST = 23:00Z the day before; 04:00 CET = 03:00Z: four
			// hours, not three.
			{at: "2026-10-24T23:00:00Z", open: true, remaining: 4 * time.Hour},
			{at: "2026-10-25T02:30:00Z", open: true, remaining: 30 * time.Minute},
			// Next Sunday 01:00 CET = 00:00Z on 1 November.
			{at: "2026-10-25T03:00:00Z", open: false, untilNext: 6*24*time.Hour + 21*time.Hour},
		}},
		{"fall back, an end in the repeated hour means the second", []string{"Sun 00:00-02:30 Europe/Berlin"}, []check{
			// 02:30 happens twice: 00:30Z (CEST) and 01:30Z (CET); the
			// window ends at the second, in the offset after the change.
			{at: "2026-10-25T00:00:00Z", open: true, remaining: 90 * time.Minute},
			{at: "2026-10-25T01:30:00Z", open: false},
		}},
		{"fall back, overnight window over the change", []string{"Sat 22:00-06:00 Europe/Berlin"}, []check{
			// 22:00 CEST = 20:00Z; 06:00 CET = 05:00Z: nine hours.
			{at: "2026-10-24T20:00:00Z", open: true, remaining: 9 * time.Hour},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ws := mustWindows(t, tt.windows...)
				for _, c := range tt.checks {
					at := utc(c.at)
					if d := time.Until(at); d < 0 {
						t.Fatalf("checks must go forward: %s is in the bubble's past", c.at)
					} else {
						time.Sleep(d)
					}
					now := time.Now()
					open, end := ws.OpenAt(now)
					if open != c.open {
						t.Fatalf("at %s: open = %v, want %v", c.at, open, c.open)
					}
					if open && end.Sub(now) != c.remaining {
						t.Errorf("at %s: remaining = %s, want %s", c.at, end.Sub(now), c.remaining)
					}
					if !open && c.untilNext != 0 {
						if got := ws.NextOpening(now).Sub(now); got != c.untilNext {
							t.Errorf("at %s: next opening in %s, want %s", c.at, got, c.untilNext)
						}
					}
				}
			})
		})
	}
}

// TestEvaluateWindows checks that a request outside every window of a rule
// is refused with the next opening, and one inside is allowed with the
// deadline clipped.
func TestEvaluateWindows(t *testing.T) {
	l := policy.DefaultLimits()
	pol, err := l.Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), MaxDuration: 3 * time.Hour, Windows: []string{"mon-fri 08:00-18:00 Europe/Berlin"}},
		{Port: tcp(443), MaxDuration: 3 * time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if pol.Rules[0].Windows[0] != "Mon-Fri 08:00-18:00 Europe/Berlin" {
		t.Errorf("normalized window = %q", pol.Rules[0].Windows[0])
	}
	req := policy.Request{Ports: []policy.Port{tcp(22)}, Source: pfx("198.51.100.7/32"), Duration: 2 * time.Hour}

	req.At = utc("2026-12-12T12:00:00Z") // Saturday
	err = l.Evaluate(pol, req)
	var de *policy.DenyError
	if !errors.As(err, &de) || de.Rule != "22/tcp" || !de.NextOpening.Equal(utc("2026-12-14T07:00:00Z")) ||
		!strings.Contains(de.Reason, "next opens Mon 2026-12-14 08:00 CET (2026-12-14 07:00 UTC)") {
		t.Fatalf("Saturday: %#v", err)
	}
	// A port without windows is not held back by another port's.
	if err := l.Evaluate(pol, policy.Request{Ports: []policy.Port{tcp(443)}, Source: req.Source, Duration: time.Hour, At: req.At}); err != nil {
		t.Errorf("443 on Saturday: %v", err)
	}
	// A source refusal wins over the window.
	bad := req
	bad.Source = pfx("198.51.100.0/24")
	if err := l.Evaluate(pol, bad); err == nil || !strings.Contains(err.Error(), "per-request limit") {
		t.Errorf("wide source on Saturday: %v", err)
	}
	// No start time: refused, never waved through.
	noAt := req
	noAt.At = time.Time{}
	if err := l.Evaluate(pol, noAt); !errors.As(err, &de) {
		t.Errorf("no start: %v", err)
	}

	req.At = utc("2026-12-14T15:30:00Z") // Monday 16:30 Berlin
	if err := l.Evaluate(pol, req); err != nil {
		t.Fatalf("Monday: %v", err)
	}
	end, limited, err := pol.CheckWindows(req.Ports, req.At)
	if err != nil || !limited || !end.Equal(utc("2026-12-14T17:00:00Z")) {
		t.Fatalf("CheckWindows = %s, %v, %v", end, limited, err)
	}
	dl, clipped := policy.ClipDeadline(req.At, req.Duration, end, limited)
	if !clipped || !dl.Equal(utc("2026-12-14T17:00:00Z")) {
		t.Errorf("ClipDeadline = %s, %v; want 17:00Z, clipped", dl, clipped)
	}
	dl, clipped = policy.ClipDeadline(req.At, time.Hour, end, limited)
	if clipped || !dl.Equal(utc("2026-12-14T16:30:00Z")) {
		t.Errorf("ClipDeadline(1h) = %s, %v; want 16:30Z, not clipped", dl, clipped)
	}
	// Both ports: the tighter clip of the two rules.
	end, limited, err = pol.CheckWindows([]policy.Port{tcp(443), tcp(22)}, req.At)
	if err != nil || !limited || !end.Equal(utc("2026-12-14T17:00:00Z")) {
		t.Errorf("CheckWindows(443, 22) = %s, %v, %v", end, limited, err)
	}
}

func TestNormalizeWindowsAndGroups(t *testing.T) {
	l := policy.DefaultLimits()
	tests := []struct {
		name  string
		rule  policy.Rule
		field string
	}{
		{"bad window", policy.Rule{Port: tcp(22), Windows: []string{"Mon-Fri 8-18 UTC"}}, "rules[0].windows[0]"},
		{"no zone", policy.Rule{Port: tcp(22), Windows: []string{"Mon-Fri 08:00-18:00"}}, "rules[0].windows[0]"},
		{"twice", policy.Rule{Port: tcp(22), Windows: []string{"Mon 08:00-18:00 UTC", "mon 08:00-18:00 UTC"}}, "rules[0].windows[1]"},
		{"bad group", policy.Rule{Port: tcp(22), ApprovalGroups: []policy.GroupApproval{{From: "dba", Count: 1}}}, "rules[0].approvals[0].from"},
		{"user is not a group", policy.Rule{Port: tcp(22), ApprovalGroups: []policy.GroupApproval{{From: "user:bob", Count: 1}}}, "rules[0].approvals[0].from"},
		{"group twice", policy.Rule{Port: tcp(22), ApprovalGroups: []policy.GroupApproval{{From: "group:dba"}, {From: "group:dba"}}}, "rules[0].approvals[1].from"},
		{"negative count", policy.Rule{Port: tcp(22), ApprovalGroups: []policy.GroupApproval{{From: "group:dba", Count: -1}}}, "rules[0].approvals[0].count"},
		{"too many", policy.Rule{Port: tcp(22), ApprovalGroups: []policy.GroupApproval{{From: "group:dba", Count: 6}, {From: "group:sec", Count: 5}}}, "rules[0].approvals"},
		{"auto with groups", policy.Rule{Port: tcp(22), Approval: policy.Approval{Mode: policy.Auto}, ApprovalGroups: []policy.GroupApproval{{From: "group:dba"}}}, "rules[0].approval.mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Normalize(policy.Policy{Rules: []policy.Rule{tt.rule}})
			var fe *policy.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("Normalize = %v, want a field error on %s", err, tt.field)
			}
		})
	}
	pol, err := l.Normalize(policy.Policy{Rules: []policy.Rule{{Port: tcp(22), ApprovalGroups: []policy.GroupApproval{{From: "group:dba"}, {From: "role:approver", Count: 2}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := pol.Rules[0]; r.Approval != (policy.Approval{Mode: policy.Manual, Approvals: 3}) || r.ApprovalGroups[0].Count != 1 {
		t.Errorf("normalized = %+v", r)
	}
	if n := pol.ApprovalsRequired([]policy.Port{tcp(22)}); n != 3 {
		t.Errorf("ApprovalsRequired = %d, want 3", n)
	}
}

// TestCompareWindowsAndGroups checks which changes of windows and of
// approvals by group weaken the gate.
func TestCompareWindowsAndGroups(t *testing.T) {
	l := policy.DefaultLimits()
	rule := func(ws []string, gs ...policy.GroupApproval) policy.Policy {
		return policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Windows: ws, ApprovalGroups: gs}}}
	}
	dba, sec := policy.GroupApproval{From: "group:dba", Count: 1}, policy.GroupApproval{From: "group:security", Count: 1}
	tests := []struct {
		name     string
		old, new policy.Policy
		want     string
	}{
		{"add windows", rule(nil), rule([]string{"Mon-Fri 08:00-18:00 UTC"}), "22/tcp windows: always -> Mon-Fri 08:00-18:00 UTC"},
		{"remove windows", rule([]string{"Mon-Fri 08:00-18:00 UTC"}), rule(nil), "22/tcp windows: Mon-Fri 08:00-18:00 UTC -> always (weaker)"},
		{"narrow hours", rule([]string{"Mon-Fri 08:00-18:00 UTC"}), rule([]string{"Mon-Fri 09:00-17:00 UTC"}), "22/tcp windows: Mon-Fri 08:00-18:00 UTC -> Mon-Fri 09:00-17:00 UTC"},
		{"widen hours", rule([]string{"Mon-Fri 08:00-18:00 UTC"}), rule([]string{"Mon-Fri 08:00-19:00 UTC"}), "22/tcp windows: Mon-Fri 08:00-18:00 UTC -> Mon-Fri 08:00-19:00 UTC (weaker)"},
		{"add a day", rule([]string{"Mon-Fri 08:00-18:00 UTC"}), rule([]string{"Mon-Sat 08:00-18:00 UTC"}), "22/tcp windows: Mon-Fri 08:00-18:00 UTC -> Mon-Sat 08:00-18:00 UTC (weaker)"},
		{"drop a day", rule([]string{"Mon-Fri 08:00-18:00 UTC"}), rule([]string{"Mon-Thu 08:00-18:00 UTC"}), "22/tcp windows: Mon-Fri 08:00-18:00 UTC -> Mon-Thu 08:00-18:00 UTC"},
		{"add a window", rule([]string{"Mon 08:00-18:00 UTC"}), rule([]string{"Mon 08:00-18:00 UTC", "Sat 10:00-11:00 UTC"}), "22/tcp windows: Mon 08:00-18:00 UTC -> Mon 08:00-18:00 UTC; Sat 10:00-11:00 UTC (weaker)"},
		{"remove one of two", rule([]string{"Mon 08:00-18:00 UTC", "Sat 10:00-11:00 UTC"}), rule([]string{"Sat 10:00-11:00 UTC"}), "22/tcp windows: Mon 08:00-18:00 UTC; Sat 10:00-11:00 UTC -> Sat 10:00-11:00 UTC"},
		{"overnight inside two", rule([]string{"Mon 20:00-24:00 UTC", "Tue 00:00-08:00 UTC"}), rule([]string{"Mon 22:00-06:00 UTC"}), "22/tcp windows: Mon 20:00-24:00 UTC; Tue 00:00-08:00 UTC -> Mon 22:00-06:00 UTC"},
		{"overnight past Sunday", rule([]string{"Sun 20:00-24:00 UTC"}), rule([]string{"Sun 22:00-02:00 UTC"}), "22/tcp windows: Sun 20:00-24:00 UTC -> Sun 22:00-02:00 UTC (weaker)"},
		{"other zone", rule([]string{"Mon-Fri 08:00-18:00 UTC"}), rule([]string{"Mon-Fri 09:00-17:00 Europe/Berlin"}), "22/tcp windows: Mon-Fri 08:00-18:00 UTC -> Mon-Fri 09:00-17:00 Europe/Berlin (weaker)"},
		{"add a group", rule(nil, dba), rule(nil, dba, sec), "22/tcp approvals: 1 from group:dba -> 1 from group:dba, 1 from group:security"},
		{"remove a group", rule(nil, dba, sec), rule(nil, dba), "22/tcp approvals: 1 from group:dba, 1 from group:security -> 1 from group:dba (weaker)"},
		{"lower a count", rule(nil, policy.GroupApproval{From: "group:dba", Count: 2}), rule(nil, dba), "22/tcp approvals: 2 from group:dba -> 1 from group:dba (weaker)"},
		{"raise a count", rule(nil, dba), rule(nil, policy.GroupApproval{From: "group:dba", Count: 2}), "22/tcp approvals: 1 from group:dba -> 2 from group:dba"},
		{"swap a group", rule(nil, dba), rule(nil, sec), "22/tcp approvals: 1 from group:dba -> 1 from group:security (weaker)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range l.Compare(&tt.old, tt.new) {
				got = append(got, c.String())
			}
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("changes = %q, want [%q]", got, tt.want)
			}
		})
	}
}

// TestCompareWindowsAgreesWithOpenAt: whenever Compare calls a change of
// windows not weaker, no instant across a year's two daylight-saving
// changes is admitted by the new windows and refused by the old, and no
// grant starting then is clipped later by the new than by the old. Before
// wall times in the spring-forward gap meant the moment the clocks jump,
// "Sun 01:00-02:59 Europe/Berlin" (an end in the gap, read as 02:59 CET =
// 03:59 CEST) passed as narrower than "Sun 01:00-03:00" yet stayed open
// an hour longer that night.
func TestCompareWindowsAgreesWithOpenAt(t *testing.T) {
	l := policy.DefaultLimits()
	windows := []string{
		"Sun 01:00-03:00 Europe/Berlin", "Sun 01:00-02:59 Europe/Berlin", "Sun 00:00-02:30 Europe/Berlin",
		"Sun 02:30-05:00 Europe/Berlin", "Sun 02:00-02:30 Europe/Berlin", "Sun 03:00-04:00 Europe/Berlin",
		"Sun 01:00-04:00 Europe/Berlin", "Sat 23:00-02:30 Europe/Berlin", "Sun 02:10-02:20 Europe/Berlin",
		"Sun 02:59-03:30 Europe/Berlin", "Sat 22:00-03:00 Europe/Berlin",
	}
	days := []time.Time{utc("2026-03-28T20:00:00Z"), utc("2026-10-24T20:00:00Z")}
	for _, o := range windows {
		for _, n := range windows {
			old := policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Windows: []string{o}}}}
			nw := policy.Policy{Rules: []policy.Rule{{Port: tcp(22), MaxDuration: time.Hour, Windows: []string{n}}}}
			if len(policy.Weaker(l.Compare(&old, nw))) > 0 {
				continue
			}
			ow, nws := mustWindows(t, o), mustWindows(t, n)
			for _, d := range days {
				for at := d; at.Before(d.Add(10 * time.Hour)); at = at.Add(time.Minute) {
					nOpen, nEnd := nws.OpenAt(at)
					if !nOpen {
						continue
					}
					oOpen, oEnd := ow.OpenAt(at)
					if !oOpen || nEnd.After(oEnd) {
						t.Errorf("%q -> %q is called not weaker, but at %s the new admits until %s and the old %v until %s",
							o, n, at.Format(time.RFC3339), nEnd.Format(time.RFC3339), oOpen, oEnd.Format(time.RFC3339))
						break
					}
				}
			}
		}
	}
}

// TestOpenAtManyTouchingWindows: sixteen windows that together are always
// open, in zones whose days overlap and touch, are followed to an end
// (the lookahead's), not round and round: the grant is clipped by its
// duration, never by a loop.
func TestOpenAtManyTouchingWindows(t *testing.T) {
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati", "Etc/GMT+12", "Australia/Lord_Howe", "America/St_Johns"}
	var ss []string
	for _, z := range zones {
		ss = append(ss, "Mon-Sun 00:00-12:00 "+z, "Mon-Sun 12:00-24:00 "+z)
	}
	ws := mustWindows(t, ss...)
	for _, at := range []time.Time{utc("2026-03-29T00:30:00Z"), utc("2026-10-25T01:30:00Z"), utc("2026-12-31T23:59:00Z")} {
		open, end := ws.OpenAt(at)
		if !open || !end.After(at.Add(7*24*time.Hour)) || end.After(at.Add(10*24*time.Hour)) {
			t.Errorf("at %s: open %v until %s; want open until the lookahead, 7 to 10 days on", at, open, end)
		}
	}
}
