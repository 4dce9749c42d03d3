package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestGatewayFullStack drives gateway mode through the real server, the real
// gateway agent and the CLI: a target behind the gateway is declared with its
// address (refused when the gateway does not route it), a published port gets
// a mapped port, a request prints exactly what to connect to, ssh through the
// mapped port works for the granted source while another source is dropped,
// the dropped attempts show up in `target show`, and the grant ends on time.
func TestGatewayFullStack(t *testing.T) {
	t.Parallel()
	s := newGatewayStack(t)
	g, cli, run, asJSON := s.GatewayLab, s.args, s.run, s.json

	_, stderr, err := g.CLIResult(cli("target", "add", "web-01", "--gateway", "gw-1", "--address", "10.99.0.5")...)
	if err == nil || !strings.Contains(stderr, "not routed by gateway gw-1") {
		t.Fatalf("a target at an address the gateway does not route: err=%v stderr=%q", err, stderr)
	}
	run("target", "add", "web-01", "--gateway", "gw-1", "--address", target1.String())
	run("policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--publish")
	var tg wire.Target
	asJSON(&tg, "target", "show", "web-01")
	if len(tg.Mappings) != 1 || tg.Mappings[0].MappedPort == 0 {
		t.Fatalf("web-01 mappings %+v, want one mapped port", tg.Mappings)
	}
	mapped := tg.Mappings[0].MappedPort
	g.Eventually("the gateway applied web-01's policy", 10*time.Second, func() bool {
		var gt wire.Target
		asJSON(&gt, "target", "show", "gw-1")
		return gt.Agent.AppliedRevision == gt.Agent.Revision
	})
	if g.CanDial(client1, gwPublic, mapped) || g.CanDial(client1, target1, 22) {
		t.Fatal("web-01 is reachable before any grant")
	}

	var req wire.Request
	asJSON(&req, "request", "web-01", "--port", "22", "--duration", "6s", "--reason", "e2e gateway", "--wait")
	want := fmt.Sprintf("ssh -p %d %s", mapped, gwPublic)
	if req.State != "active" || len(req.Connect) != 1 || !strings.Contains(req.Connect[0], want) {
		t.Fatalf("request %s, connect %q; want active and %q", req.State, req.Connect, want)
	}
	out, err := g.SSHPort(client1, gwPublic, mapped, "echo $SSH_CONNECTION")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), client1.String()+" ") {
		t.Fatalf("ssh through the mapped port: %v: %q (want the target to see %s)", err, out, client1)
	}
	for i := 0; i < 3; i++ {
		if g.CanDial(client2, gwPublic, mapped) {
			t.Fatal("another source got through the mapped port")
		}
	}
	g.Eventually("blocked attempts reported for web-01", 15*time.Second, func() bool {
		var b wire.Target
		asJSON(&b, "target", "show", "web-01")
		return b.Blocked != nil && len(b.Blocked.TopSources) > 0 && b.Blocked.TopSources[0].Source == client2.String()
	})
	time.Sleep(time.Until(req.ExpiresAt))
	g.Eventually("the mapped port closes on time", 200*time.Millisecond, func() bool { return !g.CanDial(client1, gwPublic, mapped) })
}
