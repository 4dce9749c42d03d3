package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

var (
	gwPublic  = testlab.GwPublic
	gwPublic6 = testlab.GwPublic6
	target1   = testlab.Target1
	target1v6 = testlab.Target1v6
	target2   = testlab.Target2
	client6b  = testlab.Client6b
)

// startGatewayAgent runs the real agent binary in gateway mode on the
// gateway, against the fake server.
func startGatewayAgent(g *testlab.GatewayLab, srv *fakeServer) *testlab.Proc {
	return g.Start(g.Gateway, "jitgate agent (gateway)", g.Binary, "agent", "--mode", "gateway", "--resync", "1s",
		"--server", srv.URL, "--enroll-token", fakeEnrollToken, "--state-dir", filepath.Join(g.Dir, "agent"))
}

func port(dest netip.Addr, closeEstablished bool) wire.Port {
	return wire.Port{Destination: dest.String(), Protocol: "tcp", Port: 22, CloseEstablished: closeEstablished}
}

func grantTo(src, dest netip.Addr, exp time.Time) wire.GrantEntry {
	return wire.GrantEntry{Source: src.String(), Destination: dest.String(), Protocol: "tcp", Port: 22, ExpiresAt: exp}
}

// TestGatewayMode runs the real agent in gateway mode on a router in front
// of two targets with real sshds, driven by a fake server, and checks with
// real packets: forward-path grants (IPv4 and IPv6) for exactly the granted
// (source, destination); ssh through DNAT mappings for a granted source only,
// with the target seeing the client's real address; blocked-attempt counters
// equal to the attempts made, and their sampled sources; the inventory; and,
// with the agent killed, grants expiring on time in the kernel, the session on
// a close-established port cut at expiry while the one on a plain port lives.
func TestGatewayMode(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	g := testlab.NewGateway(t)
	t.Logf("lab up after %v", time.Since(t0))
	short := time.Now().Add(15 * time.Second)
	long := time.Now().Add(10 * time.Minute)
	srv := newFakeServer(t, g.Gateway, wire.DesiredState{
		Target: "gw-1", Revision: 1, Mode: "gateway",
		Protected: []wire.Port{port(target1, false), port(target2, true), port(target1v6, false)},
		Grants: []wire.GrantEntry{
			grantTo(client1, target1, short),
			grantTo(client1, target2, short),
			grantTo(client6, target1v6, long),
		},
		Published: []wire.Mapping{
			{Destination: target1.String(), Protocol: "tcp", Port: 22, PublicAddress: gwPublic.String(), MappedPort: 2201},
			{Destination: target1v6.String(), Protocol: "tcp", Port: 22, PublicAddress: gwPublic6.String(), MappedPort: 2201},
		},
	})
	agent := startGatewayAgent(g, srv)
	first := srv.waitReport(t, "applying revision 1", 10*time.Second, func(r wire.AgentReport) bool { return r.Revision == 1 })
	if first.Error != "" || first.Mode != "gateway" {
		t.Fatalf("first report: mode %q, error %q", first.Mode, first.Error)
	}
	inv := srv.firstInventory()
	if inv == nil || !inv.CanEnforce || inv.Kernel == "" {
		t.Fatalf("inventory = %+v, want one that can enforce", inv)
	}
	for _, r := range []string{"198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24", "2001:db8:100::/64", "2001:db8:200::/64"} {
		if !slices.Contains(inv.Routes, r) {
			t.Errorf("inventory routes %v lack %s", inv.Routes, r)
		}
	}

	t.Logf("%v: forward path: only granted (source, destination) pairs pass", time.Since(t0))
	blockedConns := map[string]uint64{} // destination:port -> attempts we made that must be dropped
	expect := func(src, dst netip.Addr, p uint16, want bool) {
		t.Helper()
		if got := g.CanDial(src, dst, p); got != want {
			t.Errorf("connect %s -> %s: %v, want %v", src, netip.AddrPortFrom(dst, p), got, want)
		}
		if !want {
			blockedConns[netip.AddrPortFrom(dst, p).String()]++
		}
	}
	expect(client1, target1, 22, true)
	expect(client1, target2, 22, true)
	expect(client2, target1, 22, false)
	expect(client2, target1, 22, false)
	expect(client2, target2, 22, false)
	expect(client6, target1v6, 22, true)
	expect(client6b, target1v6, 22, false)

	t.Logf("%v: DNAT: ssh through the mapped port for the granted source; the target sees the client's own address", time.Since(t0))
	out, err := g.SSHPort(client1, gwPublic, 2201, "echo $SSH_CONNECTION")
	if err != nil || !strings.HasPrefix(out, "192.0.2.1 ") || !strings.Contains(out, " 198.51.100.10 22") {
		t.Fatalf("ssh via %s:2201: %v: %q; want a session on 198.51.100.10 from 192.0.2.1", gwPublic, err, out)
	}
	out, err = g.SSHPort(client6, gwPublic6, 2201, "echo $SSH_CONNECTION")
	if err != nil || !strings.HasPrefix(out, "2001:db8::1 ") || !strings.Contains(out, " 2001:db8:100::10 22") {
		t.Fatalf("ssh via [%s]:2201: %v: %q", gwPublic6, err, out)
	}
	expect(client2, gwPublic, 2201, false)
	expect(client6b, gwPublic6, 2201, false)

	t.Logf("%v: blocked attempts: the counters equal the attempts made, and the sources are sampled", time.Since(t0))
	want := map[string]uint64{
		"198.51.100.10:22":      blockedConns["198.51.100.10:22"],
		"203.0.113.20:22":       blockedConns["203.0.113.20:22"],
		"[2001:db8:100::10]:22": blockedConns["[2001:db8:100::10]:22"],
		"192.0.2.254:2201":      blockedConns["192.0.2.254:2201"],
		"[2001:db8::fe]:2201":   blockedConns["[2001:db8::fe]:2201"],
	}
	counted := func(r wire.AgentReport) map[string]uint64 {
		got := map[string]uint64{}
		for _, c := range r.Blocked {
			k := netip.AddrPortFrom(netip.MustParseAddr(c.Destination), c.Port).String()
			got[k] = c.Connections
			if c.Packets != c.Connections {
				got[k+" packets"] = c.Packets
			}
		}
		return got
	}
	srv.waitReport(t, fmt.Sprintf("with the blocked counters %v", want), 5*time.Second, func(r wire.AgentReport) bool {
		return fmt.Sprint(counted(r)) == fmt.Sprint(want)
	})
	sources := map[string]int{}
	for _, r := range srv.reportsSnapshot() {
		for _, s := range r.BlockedSources {
			sources[s.Source+" -> "+netip.AddrPortFrom(netip.MustParseAddr(s.Destination), s.Port).String()] += s.Count
		}
	}
	for k, n := range map[string]int{
		"192.0.2.3 -> 198.51.100.10:22":        2,
		"192.0.2.3 -> 203.0.113.20:22":         1,
		"2001:db8::3 -> [2001:db8:100::10]:22": 1,
		"192.0.2.3 -> 192.0.2.254:2201":        1,
		"2001:db8::3 -> [2001:db8::fe]:2201":   1,
	} {
		if sources[k] != n {
			t.Errorf("sampled %d attempts %s, want %d (all sampled: %v)", sources[k], k, n, sources)
		}
	}

	t.Logf("%v: sessions across expiry with the agent killed: cut on the close-established port, kept on the other", time.Since(t0))
	kept, stopKept := g.SSHSession(client1, target1)
	cut, stopCut := g.SSHSession(client1, target2)
	defer stopKept()
	defer stopCut()
	for name, c := range map[string]<-chan string{"target1": kept, "target2": cut} {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("the ssh session to %s produced no output", name)
		}
	}
	agent.Kill()
	if time.Until(short) < time.Second {
		t.Fatalf("the test was too slow: the short grants end in %v", time.Until(short))
	}
	time.Sleep(time.Until(short.Add(-500 * time.Millisecond)))
	if !g.CanDial(client1, target1, 22) {
		t.Fatal("the grant closed early after the agent was killed")
	}
	drain(kept)
	drain(cut)
	time.Sleep(time.Until(short))
	g.Eventually("new connections refused after the deadline", 200*time.Millisecond, func() bool {
		return !g.CanDial(client1, target1, 22)
	})
	if g.CanDial(client1, target2, 22) || g.CanDial(client1, gwPublic, 2201) {
		t.Error("the expired grants still open target2 or the DNAT mapping")
	}
	if !g.CanDial(client6, target1v6, 22) {
		t.Error("the live IPv6 grant closed with the others")
	}
	time.Sleep(time.Second)
	if n := drain(kept); n < 5 {
		t.Errorf("the session to target1 (close-established off) got %d lines in the second after expiry, want it alive (≥ 5)", n)
	}
	ended := false
	timeout := time.After(2 * time.Second)
	for !ended {
		select {
		case _, ok := <-cut:
			ended = !ok
		case <-timeout:
			t.Fatal("the session to target2 (close-established on) is still open 2s after expiry")
		}
	}
}

// TestAgentWithoutPrivilege runs the agent without CAP_NET_ADMIN: it must
// keep running and report that it cannot enforce, and why.
func TestAgentWithoutPrivilege(t *testing.T) {
	t.Parallel()
	testenv.RequireKernel(t)
	testenv.RequireTool(t, "capsh")
	ns := testenv.NewNetns(t)
	srv := newFakeServer(t, ns, wire.DesiredState{Target: "gw-2", Revision: 1, Mode: "gateway",
		Protected: []wire.Port{port(target1, false)}})
	g := testlab.NewBare(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "agent"), 0o700); err != nil {
		t.Fatal(err)
	}
	p := g.Start(ns, "unprivileged agent", "capsh", "--drop=cap_net_admin", "--", "-c", `exec "$0" "$@"`,
		g.Binary, "agent", "--mode", "gateway", "--resync", "1s", "--server", srv.URL, "--enroll-token", fakeEnrollToken,
		"--state-dir", filepath.Join(dir, "agent"))
	rep := srv.waitReport(t, "saying it cannot enforce", 10*time.Second, func(r wire.AgentReport) bool { return r.Revision == 1 })
	inv := srv.firstInventory()
	if inv == nil || inv.CanEnforce || !strings.Contains(inv.Reason, "CAP_NET_ADMIN") || !strings.Contains(rep.Error, "cannot enforce") {
		t.Fatalf("report %+v with inventory %+v; want CanEnforce=false naming CAP_NET_ADMIN, and the error", rep, inv)
	}
	// It keeps running and reporting.
	n := len(srv.reportsSnapshot())
	g.Eventually("more reports", 15*time.Second, func() bool { return len(srv.reportsSnapshot()) > n+1 })
	select {
	case <-p.Done():
		t.Fatalf("the agent exited:\n%s", p.Output())
	default:
	}
}
