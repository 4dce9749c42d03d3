package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/firewalltest"
	"github.com/jitgate/jitgate/internal/wire"
)

const fixtureProc procFS = "testdata/proc"

func TestInventoryFromProc(t *testing.T) {
	inv := fixtureProc.inventory(firewall.GatewayMode, nil)
	want := &wire.Inventory{
		Hostname:   inv.Hostname,
		CanEnforce: true,
		Kernel:     "6.18.0-test",
		Listening: []wire.Listener{
			{Address: "0.0.0.0", Port: 22, Protocol: "tcp", Process: "sshd"},
			{Address: "::", Port: 22, Protocol: "tcp"},
			{Address: "2001:db8::2", Port: 3389, Protocol: "tcp"},
			{Address: "127.0.0.1", Port: 8080, Protocol: "tcp"},
			{Address: "0.0.0.0", Port: 53, Protocol: "udp"},
		},
		Routes: []string{"172.16.0.0/16", "192.0.2.0/24", "198.51.100.0/24", "2001:db8:100::/64", "2001:db8::/64"},
		// Per interface: eth0 holds the default routes (the client side
		// when no public address says otherwise); 172.16.0.0/16 goes
		// through a next hop on eth1.
		Links: []wire.Link{
			{Name: "eth0", Prefixes: []string{"192.0.2.0/24", "2001:db8::/64"}, Default: true},
			{Name: "eth1", Prefixes: []string{"172.16.0.0/16", "198.51.100.0/24", "2001:db8:100::/64"}},
		},
	}
	if diff := cmp.Diff(want, inv); diff != "" {
		t.Errorf("inventory mismatch (-want +got):\n%s", diff)
	}
	if host := fixtureProc.inventory(firewall.HostMode, errors.New("no privilege")); host.Routes != nil || host.CanEnforce || host.Reason != "no privilege" {
		t.Errorf("host-mode inventory without privilege = %+v", host)
	}
}

// startFake runs an agent on srv and a Fake inside the current bubble, with
// the fixture /proc.
func startFake(t *testing.T, srv server, backend *firewalltest.Fake, cfg Config) (*Agent, func() error) {
	t.Helper()
	cfg.StateDir = t.TempDir()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(&syncBuffer{})
	}
	a, err := New(cfg, backend)
	if err != nil {
		t.Fatal(err)
	}
	a.srv, a.proc = srv, fixtureProc
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, func() error { cancel(); return <-done }
}

func (m *memServer) lastReport() wire.AgentReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.reports) == 0 {
		return wire.AgentReport{}
	}
	return m.reports[len(m.reports)-1]
}

func (m *memServer) allReports() []wire.AgentReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]wire.AgentReport(nil), m.reports...)
}

func gatewayState(rev int64, exp time.Time) wire.DesiredState {
	return wire.DesiredState{
		Target: "gw-1", Revision: rev, Mode: "gateway",
		Protected: []wire.Port{
			{Destination: "198.51.100.10", Port: 22, Protocol: "tcp", CloseEstablished: true},
			{Destination: "2001:db8:100::10", Port: 22, Protocol: "tcp"},
		},
		Grants: []wire.GrantEntry{
			{Source: "192.0.2.1", Destination: "198.51.100.10", Port: 22, Protocol: "tcp", ExpiresAt: exp},
			{Source: "2001:db8::/64", Destination: "2001:db8:100::10", Port: 22, Protocol: "tcp", ExpiresAt: exp},
		},
		Published:         []wire.Mapping{{Destination: "198.51.100.10", Protocol: "tcp", Port: 22, PublicAddress: "203.0.113.1", MappedPort: 2201}},
		BlockedSampleRate: 5,
	}
}

func TestGatewayAgentAppliesAndReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := firewalltest.NewFake()
		exp := time.Now().Add(time.Hour)
		srv := newMemServer(gatewayState(1, exp))
		_, stop := startFake(t, srv, backend, Config{Mode: firewall.GatewayMode, Sampler: backend, ResyncEvery: time.Minute})
		time.Sleep(time.Second)
		synctest.Wait()

		st, err := backend.State(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		web, web6 := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("2001:db8:100::10")
		if st.Mode != firewall.GatewayMode || !st.AllowsTo(netip.MustParseAddr("192.0.2.1"), web, firewall.TCP, 22, time.Now()) ||
			st.AllowsTo(netip.MustParseAddr("192.0.2.2"), web, firewall.TCP, 22, time.Now()) ||
			!st.AllowsTo(netip.MustParseAddr("2001:db8::5"), web6, firewall.TCP, 22, time.Now()) {
			t.Errorf("gateway state = %+v", st)
		}
		if len(st.CloseEstablished) != 1 || len(st.Published) != 1 || len(st.Translations) != 1 {
			t.Errorf("close-established %v, published %v, translations %v; want one of each", st.CloseEstablished, st.Published, st.Translations)
		}
		first := srv.lastReport()
		if first.Mode != "gateway" || first.Error != "" || first.Inventory == nil || !first.Inventory.CanEnforce || len(first.Inventory.Routes) == 0 {
			t.Fatalf("first report = %+v, want gateway mode, no error, an inventory with routes", first)
		}

		// Three blocked attempts from one source, one from another; the
		// next report (the resync) carries the counters and the sources, and
		// no inventory (unchanged).
		backend.Block(netip.MustParseAddr("203.0.113.66"), firewall.PortKey{Proto: firewall.TCP, Port: 22, Dest: web}, false, 4, 3, time.Now())
		backend.Block(netip.MustParseAddr("203.0.113.67"), firewall.PortKey{Proto: firewall.TCP, Port: 2201, Dest: netip.MustParseAddr("203.0.113.1")}, true, 1, 1, time.Now())
		time.Sleep(time.Minute)
		synctest.Wait()
		rep := srv.lastReport()
		if rep.Inventory != nil {
			t.Errorf("unchanged inventory sent again: %+v", rep.Inventory)
		}
		wantBlocked := []wire.BlockedCounter{
			{Destination: "198.51.100.10", Protocol: "tcp", Port: 22, Packets: 4, Connections: 3},
			{Destination: "2001:db8:100::10", Protocol: "tcp", Port: 22},
			{Destination: "203.0.113.1", Protocol: "tcp", Port: 2201, Packets: 1, Connections: 1},
		}
		if diff := cmp.Diff(wantBlocked, rep.Blocked); diff != "" {
			t.Errorf("blocked counters (-want +got):\n%s", diff)
		}
		wantSources := []wire.BlockedSource{
			{Source: "203.0.113.66", Destination: "198.51.100.10", Protocol: "tcp", Port: 22, Count: 3},
			{Source: "203.0.113.67", Destination: "203.0.113.1", Protocol: "tcp", Port: 2201, Count: 1},
		}
		if diff := cmp.Diff(wantSources, rep.BlockedSources, cmpopts.IgnoreFields(wire.BlockedSource{}, "LastSeen")); diff != "" {
			t.Errorf("blocked sources (-want +got):\n%s", diff)
		}
		// Sources are reported once; counters stay cumulative.
		time.Sleep(time.Minute)
		synctest.Wait()
		if rep := srv.lastReport(); len(rep.BlockedSources) != 0 || len(rep.Blocked) != 3 || rep.Blocked[0].Packets != 4 {
			t.Errorf("later report: sources %v, counters %v; want no sources and the same counters", rep.BlockedSources, rep.Blocked)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestModeMismatchIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := firewalltest.NewFake()
		srv := newMemServer(gatewayState(1, time.Now().Add(time.Hour)))
		a, stop := startFake(t, srv, backend, Config{}) // a host-mode agent
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := backend.Batches(); n != 0 {
			t.Errorf("a host agent applied a gateway state (%d batches)", n)
		}
		rep := srv.lastReport()
		if rep.Mode != "host" || !strings.Contains(rep.Error, "gateway-mode state but this agent runs in host mode") {
			t.Errorf("report = %+v, want mode host and a refusal", rep)
		}
		if st := a.Status(); st.AppliedRevision != 0 || st.LastError == "" {
			t.Errorf("Status() = %+v", st)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

func TestCannotEnforceKeepsRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := firewalltest.NewFake()
		backend.SetProbeError(errors.New("no privilege to program nftables (needs root or CAP_NET_ADMIN): " + syscall.EPERM.Error()))
		srv := newMemServer(protectedSSH(1))
		a, stop := startFake(t, srv, backend, Config{})
		time.Sleep(30 * time.Second)
		synctest.Wait()
		reps := srv.allReports()
		if len(reps) < 3 {
			t.Fatalf("%d reports in 30s, want the agent to keep reporting", len(reps))
		}
		first := reps[0]
		if first.Inventory == nil || first.Inventory.CanEnforce || !strings.Contains(first.Inventory.Reason, "CAP_NET_ADMIN") ||
			!strings.Contains(first.Error, "cannot enforce") {
			t.Errorf("first report = %+v, inventory %+v; want CanEnforce=false with the reason and the error", first, first.Inventory)
		}
		if backend.Batches() != 0 || a.Status().AppliedRevision != 0 {
			t.Errorf("applied without being able to enforce")
		}
		// Privilege comes back: the next retry applies and says so.
		backend.SetProbeError(nil)
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if st := a.Status(); st.AppliedRevision != 1 {
			t.Errorf("Status() = %+v after the probe succeeded, want revision 1 applied", st)
		}
		rep := srv.lastReport()
		var inv *wire.Inventory
		for _, r := range srv.allReports() {
			if r.Inventory != nil {
				inv = r.Inventory
			}
		}
		if rep.Error != "" || inv == nil || !inv.CanEnforce {
			t.Errorf("after recovery: report %+v, last inventory %+v", rep, inv)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}
