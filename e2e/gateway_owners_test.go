package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// gatewayStack runs the real server and the real gateway agent on the
// gateway of a gateway lab (gw-1, public address 192.0.2.254 on its client
// link eth0), and returns the lab with CLI helpers bound to the server.
type gatewayStack struct {
	*testlab.GatewayLab
	t *testing.T
}

func newGatewayStack(t *testing.T) *gatewayStack {
	t.Helper()
	g := testlab.NewGateway(t)
	s := &gatewayStack{GatewayLab: g, t: t}
	data := filepath.Join(g.Dir, "server")
	g.Start(g.Gateway, "jitgate server", g.Binary, "server", "--listen", fmt.Sprintf("0.0.0.0:%d", testlab.APIPort),
		"--data-dir", data, "--activation-timeout", "5s")
	g.Eventually("server healthy", 10*time.Second, func() bool { return g.CanDial(client1, gwPublic, testlab.APIPort) })
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	g.Token = strings.TrimSpace(string(tok))
	var gw wire.TargetCreated
	s.json(&gw, "target", "add", "gw-1", "--public-address", gwPublic.String())
	g.Start(g.Gateway, "jitgate agent (gateway)", g.Binary, "agent", "--mode", "gateway", "--resync", "2s",
		"--server", fmt.Sprintf("http://127.0.0.1:%d", testlab.APIPort), "--enroll-token", gw.EnrollToken, "--state-dir", filepath.Join(g.Dir, "agent"))
	g.Eventually("the gateway reports gateway mode, its links and its routes", 10*time.Second, func() bool {
		var tg wire.Target
		s.json(&tg, "target", "show", "gw-1")
		return tg.Mode == "gateway" && tg.Inventory != nil && len(tg.Inventory.Links) > 0 && len(tg.Inventory.Routes) > 0
	})
	return s
}

func (s *gatewayStack) args(args ...string) []string {
	return append(args, "--server", fmt.Sprintf("http://%s:%d", gwPublic, testlab.APIPort))
}

func (s *gatewayStack) run(args ...string) string { s.t.Helper(); return s.CLI(s.args(args...)...) }

func (s *gatewayStack) json(v any, args ...string) {
	s.t.Helper()
	testlab.CLIJSONInto(s.Lab, v, s.args(args...)...)
}

func (s *gatewayStack) waitApplied() {
	s.t.Helper()
	s.Eventually("the gateway applied the latest revision", 10*time.Second, func() bool {
		var gt wire.Target
		s.json(&gt, "target", "show", "gw-1")
		return gt.Agent.AppliedRevision == gt.Agent.Revision
	})
}

// TestGatewayDualStackTarget: a dual-stack host behind a gateway, declared
// with both its addresses, is gated on both. With real packets: its IPv6
// address is closed to every IPv6 client until an IPv6 source is granted
// (before, only the one declared address was protected and the other family
// stayed open to anyone who could route to it); an IPv4 grant opens the IPv4
// address only; the IPv6 grant opens the IPv6 address for that source only,
// and revoking it closes it again while the IPv4 grant stays.
func TestGatewayDualStackTarget(t *testing.T) {
	t.Parallel()
	s := newGatewayStack(t)
	var added wire.TargetCreated
	s.json(&added, "target", "add", "web-01", "--gateway", "gw-1", "--address", target1.String()+","+target1v6.String())
	if fmt.Sprint(added.Target.Addresses) != fmt.Sprint([]string{target1.String(), target1v6.String()}) {
		t.Fatalf("web-01 was added with addresses %v, want both", added.Target.Addresses)
	}
	s.run("policy", "set", "web-01", "--port", "22/tcp", "--max", "1h")
	s.waitApplied()
	for _, c := range []struct{ src, dst netip.Addr }{{client1, target1}, {client6, target1v6}, {client6b, target1v6}} {
		if s.CanDial(c.src, c.dst, 22) {
			t.Fatalf("%s reaches %s:22 before any grant", c.src, c.dst)
		}
	}

	var r4 wire.Request
	s.json(&r4, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e dual stack v4", "--source", client1.String(), "--wait")
	if r4.State != "active" {
		t.Fatalf("IPv4 request %s: %s", r4.ID, r4.State)
	}
	if !s.CanDial(client1, target1, 22) {
		t.Error("the IPv4 grant does not open the IPv4 address")
	}
	if s.CanDial(client6, target1v6, 22) {
		t.Error("the IPv6 address opened with an IPv4 grant")
	}

	var r6 wire.Request
	s.json(&r6, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e dual stack v6", "--source", client6.String(), "--wait")
	if r6.State != "active" || !strings.Contains(fmt.Sprint(r6.Connect), target1v6.String()) {
		t.Fatalf("IPv6 request %s: %s, connect %q; want active, reached at %s", r6.ID, r6.State, r6.Connect, target1v6)
	}
	if out, err := s.SSHPort(client6, target1v6, 22, "echo $SSH_CONNECTION"); err != nil || !strings.HasPrefix(out, client6.String()+" ") {
		t.Errorf("ssh to %s from %s: %v: %q", target1v6, client6, err, out)
	}
	if s.CanDial(client6b, target1v6, 22) {
		t.Error("another IPv6 source reaches the IPv6 address")
	}

	s.run("revoke", r6.ID, "--yes", "--reason", "done")
	s.Eventually("the IPv6 address closes on revocation", 5*time.Second, func() bool { return !s.CanDial(client6, target1v6, 22) })
	if !s.CanDial(client1, target1, 22) {
		t.Error("revoking the IPv6 grant closed the IPv4 one")
	}
}

// TestGatewayClientLinkTarget: a target whose address is on the gateway's
// client link (eth0, where its public address 192.0.2.254 is, and where the
// clients are) is refused, IPv4 and IPv6 alike, from what the real agent
// reports of the kernel's routes. Clients on that link reach such a host
// directly (the packets never cross the gateway), so gating it there would
// be a promise the gateway cannot keep. A host on a link behind the gateway
// is accepted.
func TestGatewayClientLinkTarget(t *testing.T) {
	t.Parallel()
	s := newGatewayStack(t)
	for _, addr := range []string{"192.0.2.50", "2001:db8::50", target1.String() + ",2001:db8::51"} {
		_, stderr, err := s.CLIResult(s.args("target", "add", "web-02", "--gateway", "gw-1", "--address", addr)...)
		if err == nil || !strings.Contains(stderr, "client side of gateway gw-1 (interface eth0") || !strings.Contains(stderr, "without passing the gateway") {
			t.Errorf("a target at %s on the client link: err=%v stderr=%q; want a refusal naming the client side", addr, err, stderr)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("the refusal is not one line: %q", stderr)
		}
	}
	var ts []wire.Target
	s.json(&ts, "target", "list")
	if len(ts) != 1 {
		t.Errorf("targets after the refusals: %d, want only gw-1", len(ts))
	}
	s.run("target", "add", "web-01", "--gateway", "gw-1", "--address", target1.String())
}
