package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func linesState() DesiredState {
	exp := time.Date(2026, 12, 7, 20, 0, 0, 123_000_000, time.UTC)
	return DesiredState{Target: "gw-1", Revision: 42, Mode: "gateway", ServerTime: time.Date(2026, 12, 7, 19, 0, 0, 5, time.UTC),
		Protected: []Port{{Port: 22, Protocol: "tcp", Destination: "10.0.0.5"}},
		Grants: []GrantEntry{
			{ID: 1, Source: "198.51.100.7/32", Protocol: "tcp", Port: 22, ExpiresAt: exp, Destination: "10.0.0.5"},
			{ID: 2, Source: "2001:db8:99::/48", Protocol: "udp", Port: 65535, ExpiresAt: exp.Add(time.Nanosecond), Destination: "2001:db8:10::5"},
			{ID: 9_000_000_000, Source: "198.51.100.0/24", Protocol: "tcp", Port: 1, ExpiresAt: exp},
		},
		Bastion:       []BastionGrant{{GrantID: 1, RequestID: "req-1", Principal: "alice", Protocol: "tcp", Port: 22, ExpiresAt: exp, Destination: "10.0.0.5"}},
		Published:     []Mapping{{Destination: "10.0.0.5", Protocol: "tcp", Port: 22, PublicAddress: "203.0.113.10", MappedPort: 20000}},
		BreakGlassKey: "a2V5", BreakGlassRevoked: []string{"bg-1"},
	}
}

// writeLines writes ds as the server does (api.writeSnapshot).
func writeLines(t *testing.T, ds DesiredState) []byte {
	t.Helper()
	head := ds
	head.Grants, head.Bastion, head.ServerTime = []GrantEntry{}, nil, time.Time{}
	b, err := json.Marshal(head)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	for _, g := range ds.Grants {
		b = AppendGrantLine(b, g)
	}
	if b, err = AppendDesiredTail(b, ds.Bastion, ds.ServerTime); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDesiredLinesRoundTrip: a snapshot written as lines decodes to the
// state JSON gives for it (every member, grants in order, deadlines to the
// nanosecond in UTC), and an empty body is io.EOF as for JSON.
func TestDesiredLinesRoundTrip(t *testing.T) {
	ds := linesState()
	j, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	var want DesiredState
	if err := json.Unmarshal(j, &want); err != nil {
		t.Fatal(err)
	}
	var got DesiredState
	if err := DecodeDesiredLines(bytes.NewReader(writeLines(t, ds)), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines decode to another state than JSON (-json +lines):\n%s", diff)
	}
	empty := ds
	empty.Grants, empty.Bastion = nil, nil
	got = DesiredState{}
	if err := DecodeDesiredLines(bytes.NewReader(writeLines(t, empty)), &got); err != nil || got.Grants == nil || len(got.Grants) != 0 {
		t.Errorf("a snapshot without grants: %v, grants %#v; want an empty list", err, got.Grants)
	}
	if err := DecodeDesiredLines(strings.NewReader(""), &got); err != io.EOF {
		t.Errorf("an empty body: %v, want io.EOF", err)
	}
}

// TestDesiredLinesCutShort: a body cut anywhere before the end of its tail
// line (a server killed while streaming, or ending the answer after an
// error) is an error, and leaves the output untouched: the agent never
// applies part of a state. Data after the tail is refused too.
func TestDesiredLinesCutShort(t *testing.T) {
	body := writeLines(t, linesState())
	sentinel := DesiredState{Target: "untouched", Revision: 7}
	for n := 1; n < len(body); n++ {
		got := sentinel
		if err := DecodeDesiredLines(bytes.NewReader(body[:n]), &got); err == nil {
			t.Fatalf("a body cut after %d of %d bytes was taken: %+v", n, len(body), got)
		}
		if got.Target != "untouched" || got.Revision != 7 || got.Grants != nil {
			t.Fatalf("a body cut after %d bytes changed the output: %+v", n, got)
		}
	}
	got := sentinel
	if err := DecodeDesiredLines(bytes.NewReader(append(body[:len(body):len(body)], "1 192.0.2.1 tcp 22 1\n"...)), &got); err == nil || got.Target != "untouched" {
		t.Errorf("data after the tail: %v, %+v; want an error and nothing decoded", err, got)
	}
}

// TestGrantLineRefused: a malformed grant line fails the whole snapshot,
// naming the grant, as a malformed JSON entry does.
func TestGrantLineRefused(t *testing.T) {
	ds := linesState()
	ds.Grants = ds.Grants[:1]
	good := writeLines(t, ds)
	line := string(AppendGrantLine(nil, ds.Grants[0]))
	for _, bad := range []string{
		"1 198.51.100.7/32 tcp 22\n",                 // no deadline
		"1 198.51.100.7/32 tcp 22 1 10.0.0.5 more\n", // a field too many
		"x 198.51.100.7/32 tcp 22 1\n",               // id
		"-1 198.51.100.7/32 tcp 22 1\n",              // id
		"1 198.51.100.7/32 tcp 65536 1\n",            // port
		"1 198.51.100.7/32 tcp 22 -5\n",              // deadline
		"1 198.51.100.7/32 tcp 22 99999999999999999999\n",
		"1  tcp 22 1\n", // empty source
		"1 198.51.100.7/32 tcp 22 1 \n",
		"1 198.51.100.7/32 tcp 22 1\r\n",
		"1 198.51.100.7/32 tcp 22 " + strings.Repeat("1", 5000) + "\n",
	} {
		body := strings.Replace(string(good), line, bad, 1)
		var got DesiredState
		err := DecodeDesiredLines(strings.NewReader(body), &got)
		if err == nil || !strings.Contains(err.Error(), "grants[0]") {
			t.Errorf("line %q: %v; want an error naming grants[0]", bad, err)
		}
	}
	// A head that carries grants or a delta is not a snapshot in lines.
	for _, head := range []string{`"grants":[{"id":1}]`, `"since":3,"grants":[]`} {
		body := strings.Replace(string(good), `"grants":[]`, head, 1)
		var got DesiredState
		if err := DecodeDesiredLines(strings.NewReader(body), &got); err == nil {
			t.Errorf("head with %s was taken", head)
		}
	}
	if errors.Is(DecodeDesiredLines(bytes.NewReader(good), &DesiredState{}), io.EOF) {
		t.Error("the good body did not decode")
	}
}

// TestAcceptsDesiredLines: the type is recognised wherever the Accept
// header names it, with or without parameters, and only then, but for q=0
// (not acceptable).
func TestAcceptsDesiredLines(t *testing.T) {
	for accept, want := range map[string]bool{
		DesiredLinesType:                                       true,
		DesiredLinesType + ", application/json":                true,
		"application/json;q=0.9, " + DesiredLinesType + ";q=1": true,
		"application/json":                                     false,
		"":                                                     false,
		"*/*":                                                  false,
		DesiredLinesType + "x":                                 false,
		"application/json, " + DesiredLinesType + ";q=0":      false, // not acceptable (RFC 9110)
		"application/json, " + DesiredLinesType + "; Q=0.000": false,
		DesiredLinesType + ";q=0.001":                         true,
	} {
		if got := AcceptsDesiredLines(accept); got != want {
			t.Errorf("AcceptsDesiredLines(%q) = %v, want %v", accept, got, want)
		}
	}
}
