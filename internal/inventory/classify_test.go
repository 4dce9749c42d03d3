package inventory

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestClassify(t *testing.T) {
	listening := &Host{CanEnforce: true, Listening: []Listener{
		{Address: "0.0.0.0", Port: 22, Protocol: "tcp"},
		{Address: "::", Port: 3389, Protocol: "tcp"},
		{Address: "127.0.0.1", Port: 5985, Protocol: "tcp"}, // loopback only: not exposed
		{Address: "0.0.0.0", Port: 8080, Protocol: "tcp"},   // not a management port
		{Address: "0.0.0.0", Port: 22, Protocol: "udp"},
	}}
	for _, tc := range []struct {
		name string
		f    Facts
		want Result
	}{
		{"configured", Facts{HasPolicy: true, Protected: []uint16{22}, Agent: "connected", Inventory: listening}, Result{Class: Configured}},
		{"configured, never enforced", Facts{HasPolicy: true, Agent: "never"}, Result{Class: Configured, Reason: "no agent has connected yet: the policy is not enforced"}},
		{"not configured, exposed", Facts{Agent: "connected", Inventory: listening},
			Result{Class: NotConfigured, Exposed: []uint16{22, 3389}, Recommendation: "enable JIT: management ports 22, 3389 are open to anyone"}},
		{"not configured, nothing reported", Facts{Agent: "never"}, Result{Class: NotConfigured, Recommendation: "enable JIT to close its management ports until someone asks"}},
		{"unsupported", Facts{HasPolicy: true, Inventory: &Host{CanEnforce: false, Reason: "no CAP_NET_ADMIN"}}, Result{Class: Unsupported, Reason: "no CAP_NET_ADMIN"}},
		{"unsupported behind a gateway", Facts{Behind: "gw-1", Inventory: &Host{CanEnforce: false, Reason: "nf_tables missing"}},
			Result{Class: Unsupported, Reason: "its gateway gw-1 cannot enforce: nf_tables missing"}},
		{"unsupported without a reason", Facts{Inventory: &Host{}}, Result{Class: Unsupported, Reason: "the agent cannot program the firewall"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Classify(tc.f), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Classify (-want +got):\n%s", diff)
			}
		})
	}
}
