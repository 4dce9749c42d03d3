package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/policy/policytest"
	"github.com/jitgate/jitgate/internal/policyfile"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestEveryRuleFieldCrossesWireAndFile carries a rule with every field of
// policy.Rule set (policytest.FullRule, itself checked to leave none zero)
// through the API's JSON and through a policy file, and back. It fails when
// policy.Rule gains a field that the API or the file format cannot say: an
// apply of an exported file would then turn that setting off, silently.
func TestEveryRuleFieldCrossesWireAndFile(t *testing.T) {
	if z := policytest.ZeroFieldsOfAll(policytest.FullRule(), policytest.RecordedRule()); len(z) > 0 {
		t.Fatalf("policytest.FullRule and RecordedRule leave %v unset", z)
	}
	want := policy.Policy{Rules: []policy.Rule{policytest.FullRule(), policytest.RecordedRule()}}
	limits := policy.DefaultLimits()
	back := func(t *testing.T, how string, w wire.Policy) {
		t.Helper()
		got, err := fromWirePolicy(w)
		if err == nil {
			got, err = limits.Normalize(got)
		}
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if !got.Equal(want) {
			t.Errorf("%s: got %+v, want %+v (changes: %v)", how, got, want, limits.Compare(&want, got))
		}
	}

	// Through the API's JSON.
	b, err := json.Marshal(toWirePolicy(want))
	if err != nil {
		t.Fatal(err)
	}
	var w wire.Policy
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	back(t, "through JSON "+string(b), w)

	// Through a policy file, as export writes it and apply reads it.
	p, err := policyfile.FromWire("app-01", toWirePolicy(want))
	if err != nil {
		t.Fatal(err)
	}
	var file strings.Builder
	if err := (policyfile.File{Policies: []policyfile.Policy{p}}).Encode(&file); err != nil {
		t.Fatal(err)
	}
	f, err := policyfile.Parse(strings.NewReader(file.String()))
	if err != nil {
		t.Fatalf("parsing the encoded file: %v\n%s", err, file.String())
	}
	back(t, "through the file\n"+file.String(), f.Policies[0].Wire())
}

// TestBlockedCrossesStore carries an agent's blocked counters and sources,
// every field set, through the store's types and back to the wire: a field
// the conversion drops would vanish from the console and the metrics.
func TestBlockedCrossesStore(t *testing.T) {
	seen := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	in := wire.AgentReport{Mode: "gateway",
		Blocked:        []wire.BlockedCounter{{Destination: "10.20.0.5", Protocol: "tcp", Port: 22, Packets: 7, Connections: 3}},
		BlockedSources: []wire.BlockedSource{{Source: "203.0.113.9", Destination: "10.20.0.5", Protocol: "tcp", Port: 22, Count: 5, LastSeen: seen}}}
	r := fromWireReport(in)
	if r.Mode != in.Mode {
		t.Errorf("mode %q, want %q", r.Mode, in.Mode)
	}
	got := toWireBlocked(store.Blocked{Counters: r.Blocked, Sources: r.BlockedSources})
	if diff := cmp.Diff(&wire.Blocked{Counters: in.Blocked, TopSources: in.BlockedSources}, got); diff != "" {
		t.Errorf("blocked attempts after the store (-want +got):\n%s", diff)
	}
	if empty := toWireBlocked(store.Blocked{}); empty.Counters == nil || empty.TopSources == nil {
		t.Errorf("no blocked attempts = %+v, want empty lists (JSON [] rather than null)", empty)
	}
}

// TestInventoryStoredForm: an agent's inventory survives the trip to the
// store's domain form and back, and the domain form's JSON (what
// targets.inventory holds) is the wire form's, so rows stored before the
// store had its own type read the same.
func TestInventoryStoredForm(t *testing.T) {
	in := &wire.Inventory{Hostname: "gw-1", CanEnforce: false, Reason: "no nf_tables", Kernel: "6.18.0",
		Listening:   []wire.Listener{{Address: "0.0.0.0", Port: 22, Protocol: "tcp", Process: "sshd"}},
		Routes:      []string{"10.0.0.0/24"},
		Links:       []wire.Link{{Name: "eth0", Prefixes: []string{"192.0.2.0/24"}, Default: true}, {Name: "eth1", Prefixes: []string{"10.0.0.0/24"}}},
		SSHHostKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG"}}
	host := hostFromWire(in)
	if back := hostToWire(host); !reflect.DeepEqual(back, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, in)
	}
	stored, err := json.Marshal(host)
	if err != nil {
		t.Fatal(err)
	}
	old, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(stored) != string(old) {
		t.Errorf("stored form\n got %s\nwant %s (the wire form rows were written in)", stored, old)
	}
	if hostFromWire(nil) != nil || hostToWire(nil) != nil {
		t.Error("a missing inventory (unchanged) became one")
	}
}
