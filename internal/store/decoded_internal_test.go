package store

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/policy"
)

// TestDecodedTargetJSON: the memo answers what json.Unmarshal of the text
// gives, a new text for the same target is decoded anew, and what a caller
// changes in its copy does not reach the next read.
func TestDecodedTargetJSON(t *testing.T) {
	pol1 := `{"rules":[{"port":22,"protocol":"tcp","allowed_sources":["198.51.100.0/24"],"logins":["root"],"windows":["Mon-Fri 08:00-18:00 UTC"],"approvals":[{"from":"group:dba","count":1}]}]}`
	pol2 := `{"rules":[{"port":5432,"protocol":"tcp"}]}`
	want := func(raw string) *policy.Policy {
		p := new(policy.Policy)
		if err := json.Unmarshal([]byte(raw), p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	get := func(labels, addrs, pol string) targetJSON {
		t.Helper()
		d, err := decodeTargetJSON("memo-test", labels, addrs, &pol)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := get(`{"env":"prod"}`, `["192.0.2.1"]`, pol1)
	if diff := cmp.Diff(want(pol1), first.policy); diff != "" {
		t.Fatalf("decoded policy (-want +got):\n%s", diff)
	}
	// A caller changes everything it got.
	first.labels["env"] = "dev"
	first.addrs[0] = "192.0.2.99"
	first.policy.Rules[0].AllowedSources[0] = netip.MustParsePrefix("203.0.113.0/24")
	first.policy.Rules[0].Logins[0] = "admin"
	first.policy.Rules[0].Windows = nil
	first.policy.Rules[0].ApprovalGroups[0].Count = 9
	first.policy.Rules = append(first.policy.Rules, policy.Rule{})
	again := get(`{"env":"prod"}`, `["192.0.2.1"]`, pol1)
	if diff := cmp.Diff(want(pol1), again.policy); diff != "" {
		t.Errorf("policy after a caller changed its copy (-want +got):\n%s", diff)
	}
	if again.labels["env"] != "prod" || again.addrs[0] != "192.0.2.1" {
		t.Errorf("labels %v, addresses %v after a caller changed its copy", again.labels, again.addrs)
	}
	// The policy changed: the new text is what counts.
	if diff := cmp.Diff(want(pol2), get(`{"env":"prod"}`, `["192.0.2.1"]`, pol2).policy); diff != "" {
		t.Errorf("policy after it changed (-want +got):\n%s", diff)
	}
	// The policy removed.
	if d, err := decodeTargetJSON("memo-test", `{}`, `[]`, nil); err != nil || d.policy != nil {
		t.Errorf("no policy: got %v, %v", d.policy, err)
	}
}
