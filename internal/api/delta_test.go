package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// entries is a desired state's grant and bastion entries, by grant id, as
// comparable strings.
type entries map[int64][]string

func entriesOf(ds wire.DesiredState) entries {
	out := entries{}
	for _, g := range ds.Grants {
		out[g.ID] = append(out[g.ID], fmt.Sprintf("grant %s %s %d/%s until %s", g.Source, g.Destination, g.Port, g.Protocol, g.ExpiresAt.Format(time.RFC3339Nano)))
	}
	for _, b := range ds.Bastion {
		out[b.GrantID] = append(out[b.GrantID], fmt.Sprintf("bastion %s %s %s %d/%s until %s", b.RequestID, b.Principal, b.Destination, b.Port, b.Protocol, b.ExpiresAt.Format(time.RFC3339Nano)))
	}
	for id := range out {
		slices.Sort(out[id])
	}
	return out
}

// apply is what an agent does with a delta: every entry of a changed grant
// is replaced by the delta's entries of that grant.
func (e entries) apply(d wire.DesiredState) entries {
	out := entries{}
	for id, v := range e {
		if !slices.Contains(d.Changed, id) {
			out[id] = v
		}
	}
	for id, v := range entriesOf(d) {
		out[id] = v
	}
	return out
}

// TestDesiredDelta follows a host target and a gateway through grant changes
// and a rule change: an agent that says which revision it holds (?since=)
// gets only the grants changed since, and the state it builds from them is
// the snapshot's. A rule change of the host target comes as a delta too
// (Rules: the snapshot's protected ports and the grants on the ports whose
// rule went; before, a snapshot of every grant); a rule change behind the
// gateway, a revision the server does not know, or no since, gets a
// snapshot.
func TestDesiredDelta(t *testing.T) {
	ctx := context.Background()
	e, gw := gatewayEnv(t)
	host := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, AllowedSources: []string{"198.51.100.0/24"}}, {Port: 3389, Access: "both"}}})
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01", Gateway: "gw-1", Addresses: []string{"10.0.0.5", "2001:db8:10::5"}}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true, AllowedSources: []string{"198.51.100.0/24", "2001:db8:99::/48"}}}})

	request := func(target, source, port string, d time.Duration) wire.Request {
		t.Helper()
		r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{port}, Source: source, Duration: wire.Duration(d), Reason: "x"})
		if err != nil {
			t.Fatalf("CreateRequest %s %s: %v", target, source, err)
		}
		return r
	}
	var reqs []wire.Request
	steps := []struct {
		name     string
		change   func()
		snapshot bool // the change must come as a snapshot
		// gatewaySnapshot: to the gateway's agent only; rules: to the host's
		// agent, the delta carries a rule change
		gatewaySnapshot, rules bool
	}{
		{"added", func() {
			reqs = append(reqs, request("web-01", "198.51.100.7", "22", time.Hour), request("db-01", "198.51.100.7", "22", time.Hour))
		}, false, false, false},
		{"added with bastion and IPv6", func() {
			reqs = append(reqs, request("web-01", "198.51.100.8", "3389", time.Hour), request("db-01", "2001:db8:99::7", "22", time.Hour))
		}, false, false, false},
		{"extended", func() {
			request("web-01", "198.51.100.7", "22", 2*time.Hour)
			request("db-01", "198.51.100.7", "22", 2*time.Hour)
		}, false, false, false},
		{"removed", func() {
			for _, r := range reqs[2:] {
				if _, err := e.c.Revoke(ctx, r.ID, "done"); err != nil {
					t.Fatal(err)
				}
			}
		}, false, false, false},
		{"nothing changed", func() {}, false, false, false},
		{"added on the port whose rule goes next", func() {
			request("web-01", "198.51.100.10", "3389", time.Hour)
		}, false, false, false},
		{"rule changed", func() {
			e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, AllowedSources: []string{"198.51.100.0/24"}}}})
			e.setPolicy(t, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, AllowedSources: []string{"198.51.100.0/24", "2001:db8:99::/48"}}}})
		}, false, true, true},
		{"added after the rule change", func() {
			request("web-01", "198.51.100.9", "22", time.Hour)
			request("db-01", "198.51.100.9", "22", time.Hour)
		}, false, false, false},
	}
	type follower struct {
		name string
		c    *client.Client
		cur  wire.DesiredState
		held entries
	}
	agents := []*follower{{name: "host", c: host}, {name: "gateway", c: gw}}
	for _, ag := range agents {
		cur, err := ag.c.DesiredSince(ctx, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Since != 0 {
			t.Fatalf("%s: an agent that holds nothing got a delta: %+v", ag.name, cur)
		}
		ag.cur, ag.held = cur, entriesOf(cur)
	}
	for _, st := range steps {
		st.change()
		for _, ag := range agents {
			got, err := ag.c.DesiredSince(ctx, ag.cur.Revision, ag.cur.Revision, 0)
			if err != nil {
				t.Fatalf("%s %s: %v", ag.name, st.name, err)
			}
			snap, err := ag.c.DesiredSince(ctx, 0, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Revision != snap.Revision {
				t.Fatalf("%s %s: revision %d, snapshot's %d", ag.name, st.name, got.Revision, snap.Revision)
			}
			wantSnapshot := st.snapshot || (ag.name == "gateway" && st.gatewaySnapshot)
			if (got.Since == 0) != wantSnapshot {
				t.Fatalf("%s %s: since %d (changed %v), want a snapshot: %v", ag.name, st.name, got.Since, got.Changed, st.snapshot)
			}
			if got.Since == 0 {
				ag.held = entriesOf(got)
			} else {
				switch {
				case got.Since != ag.cur.Revision:
					t.Errorf("%s %s: delta since %d; want since %d", ag.name, st.name, got.Since, ag.cur.Revision)
				case got.Rules != st.rules:
					t.Errorf("%s %s: delta with rules %v, want %v", ag.name, st.name, got.Rules, st.rules)
				case got.Rules && fmt.Sprint(got.Protected) != fmt.Sprint(snap.Protected):
					t.Errorf("%s %s: the rule delta's protected ports %v are not the snapshot's %v", ag.name, st.name, got.Protected, snap.Protected)
				case !got.Rules && len(got.Protected) != 0:
					t.Errorf("%s %s: a delta without rules carries %d protected ports", ag.name, st.name, len(got.Protected))
				}
				if st.rules && len(got.Changed) != 1 {
					t.Errorf("%s %s: the rule delta changes grants %v; want the one on port 3389 whose rule went", ag.name, st.name, got.Changed)
				}
				if st.name == "nothing changed" && (len(got.Changed) != 0 || got.Revision != ag.cur.Revision) {
					t.Errorf("%s: nothing changed, yet the delta changes %v (revision %d -> %d)", ag.name, got.Changed, ag.cur.Revision, got.Revision)
				}
				ag.held = ag.held.apply(got)
			}
			want := entriesOf(snap)
			if fmt.Sprint(ag.held) != fmt.Sprint(want) {
				t.Errorf("%s %s: the state built from deltas\n%v\nis not the snapshot\n%v", ag.name, st.name, ag.held, want)
			}
			if len(want) == 0 {
				t.Errorf("%s %s: the snapshot holds no grant; the test proves nothing", ag.name, st.name)
			}
			ag.cur = got
		}
	}
	for _, ag := range agents {
		// A revision this server does not know: a snapshot.
		if got, err := ag.c.DesiredSince(ctx, ag.cur.Revision, ag.cur.Revision+7, 0); err != nil || got.Since != 0 {
			t.Errorf("%s: since a revision the server never had: since %d, %v; want a snapshot", ag.name, got.Since, err)
		}
	}
}

// TestDeltaAnswerReads counts the statements an agent's long-poll answer
// runs when one grant changed since the revision the agent holds: the
// change log and the changed grant come in one read (two before), and the
// break-glass revocations do not read the target's creation time again
// (the answer holds the target).
func TestDeltaAnswerReads(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	cur, err := agent.DesiredSince(ctx, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The same answer with nothing changed: what every answer reads (the
	// agent's credential, the target, the revocations).
	before := e.st.Queries()
	same, err := agent.DesiredSince(ctx, cur.Revision, cur.Revision, 0)
	if err != nil || same.Since != cur.Revision {
		t.Fatalf("answer without a change: %+v, %v", same, err)
	}
	base := e.st.Queries() - before
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(time.Hour), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	before = e.st.Queries()
	d, err := agent.DesiredSince(ctx, cur.Revision, cur.Revision, 0)
	if err != nil || d.Since != cur.Revision || len(d.Grants) != 1 {
		t.Fatalf("delta: %+v, %v; want one grant since %d", d, err, cur.Revision)
	}
	n := e.st.Queries() - before
	t.Logf("statements: %d for an answer without a change, %d with one grant changed", base, n)
	if n-base != 1 {
		t.Errorf("one changed grant took %d statements more than no change, want 1 (the change log with its grants)", n-base)
	}
	if base > 3 {
		t.Errorf("an answer took %d statements, want at most 3", base)
	}
}

// TestDeltaAnswerCompact checks that an agent's delta is written as compact
// JSON with its length (the indented form people read with curl was a third
// longer, on the path from a grant's commit to the kernel), and that it
// decodes to the same delta.
func TestDeltaAnswerCompact(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	cur, err := agent.DesiredSince(ctx, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(time.Hour), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/api/v1/agent/desired?after=%d&since=%d&rules=1", e.srv.URL, cur.Revision, cur.Revision)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+e.creds["web-01"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("answer %d, %v", resp.StatusCode, err)
	}
	var ds wire.DesiredState
	if err := json.Unmarshal(body, &ds); err != nil || ds.Since != cur.Revision || len(ds.Grants) != 1 {
		t.Fatalf("answer %s: %v; want a delta of one grant", body, err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		t.Fatal(err)
	}
	compact.WriteByte('\n')
	if !bytes.Equal(body, compact.Bytes()) {
		t.Errorf("the delta is not compact JSON (%d bytes, %d compact):\n%s", len(body), compact.Len(), body)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(body))
	}
}
