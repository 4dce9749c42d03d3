package agent

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// linesAnswer writes ds as a snapshot as lines, as the server does
// (api.writeSnapshot).
func linesAnswer(t *testing.T, ds wire.DesiredState) []byte {
	t.Helper()
	head := ds
	head.Grants, head.Bastion, head.ServerTime = []wire.GrantEntry{}, nil, time.Time{}
	b, err := json.Marshal(head)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	for _, g := range ds.Grants {
		b = wire.AppendGrantLine(b, g)
	}
	if b, err = wire.AppendDesiredTail(b, ds.Bastion, ds.ServerTime); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRefusedLinesAnswerAppliesNothing: the agent asks for its snapshot as
// lines and applies a good one. Then the server (or a proxy) answers the
// next revision, which drops srcA's grant and adds srcB's, in ways the
// client refuses: cut before its tail, its tail twice, a grant line ending
// in CR, a line of 5,000 bytes, a NUL in a source, the lines labelled JSON.
// The agent keeps what the kernel holds (srcA open, srcB closed, no apply),
// reports nothing for the revision, and applies it once it comes whole.
func TestRefusedLinesAnswerAppliesNothing(t *testing.T) {
	api, srv := newFakeAPI(t)
	backend := &fakeBackend{}
	var (
		mangle func([]byte) (string, []byte)
		asked  bool
	)
	api.answer = func(ds wire.DesiredState, accept string) (string, []byte) {
		api.mu.Lock()
		asked = asked || wire.AcceptsDesiredLines(accept)
		m := mangle
		api.mu.Unlock()
		body := linesAnswer(t, ds)
		if m != nil && ds.Revision > 2 {
			return m(body)
		}
		return wire.DesiredLinesType, body
	}
	start(t, enrolledConfig(t, api, srv.URL, testLogger(&syncBuffer{})), backend)
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	protected := []wire.Port{{Port: 22, Protocol: "tcp"}}
	good := api.update(protected, []wire.GrantEntry{{ID: 1, Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: exp}})
	api.waitReport(t, "for the good revision", revision(good))
	api.mu.Lock()
	if !asked {
		t.Error("the agent did not ask for lines")
	}
	api.mu.Unlock()
	before, applies, _ := backend.snapshot()
	open := func(s firewall.State, src string) bool {
		return s.Allows(netip.MustParseAddr(src), firewall.TCP, 22, time.Now())
	}
	if !open(before, srcA) || open(before, srcB) {
		t.Fatalf("the good revision: %+v", before)
	}
	line := string(wire.AppendGrantLine(nil, wire.GrantEntry{ID: 2, Source: srcB + "/32", Protocol: "tcp", Port: 22, ExpiresAt: exp}))
	replace := func(with string) func([]byte) (string, []byte) {
		return func(b []byte) (string, []byte) {
			return wire.DesiredLinesType, []byte(strings.Replace(string(b), line, with, 1))
		}
	}
	for _, tc := range []struct {
		name   string
		mangle func([]byte) (string, []byte)
	}{
		{"cut before its tail", func(b []byte) (string, []byte) {
			return wire.DesiredLinesType, b[:bytes.LastIndexByte(b[:len(b)-1], '\n')+1]
		}},
		{"its tail twice", func(b []byte) (string, []byte) {
			return wire.DesiredLinesType, append(b, b[bytes.LastIndexByte(b[:len(b)-1], '\n')+1:]...)
		}},
		{"a line ending in CR", replace(strings.TrimSuffix(line, "\n") + "\r\n")},
		{"a line of 5,000 bytes", replace(strings.TrimSuffix(line, "\n") + " " + strings.Repeat("1", 5000) + "\n")},
		{"a NUL in a source", replace(strings.Replace(line, "/32", "\x00/32", 1))},
		{"labelled JSON", func(b []byte) (string, []byte) { return "application/json", b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api.mu.Lock()
			mangle = tc.mangle
			polls := api.polls
			api.mu.Unlock()
			rev := api.update(protected, []wire.GrantEntry{{ID: 2, Source: srcB + "/32", Protocol: "tcp", Port: 22, ExpiresAt: exp}})
			eventually(t, "three polls answered with the refused body", func() bool {
				api.mu.Lock()
				defer api.mu.Unlock()
				return api.polls >= polls+3
			})
			after, applies2, _ := backend.snapshot()
			if !sameState(before, after) || applies2 != applies || !open(after, srcA) || open(after, srcB) {
				t.Fatalf("the kernel changed by a refused answer: %d -> %d applies, %+v -> %+v", applies, applies2, before, after)
			}
			if n := api.countReports(func(r wire.AgentReport) bool { return r.Revision == rev }); n != 0 {
				t.Errorf("%d reports of the refused revision %d", n, rev)
			}
		})
	}
	api.mu.Lock()
	mangle = nil
	api.mu.Unlock()
	fixed := api.update(protected, []wire.GrantEntry{{ID: 2, Source: srcB + "/32", Protocol: "tcp", Port: 22, ExpiresAt: exp}})
	api.waitReport(t, "for the revision sent whole", revision(fixed))
	if s, _, _ := backend.snapshot(); open(s, srcA) || !open(s, srcB) {
		t.Errorf("the revision sent whole: %+v", s)
	}
}
