package testlab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
)

// A routed lab: three hosts (the client, the jitgate server, a target with
// its agent), each on its own point-to-point link to a router namespace, as
// on a management network. Every path between two hosts crosses the router
// and two links, so a direct connection (client → target) and a tunnel
// (client → server → agent → target) cross the same kind of links, which
// Shape can limit to a network's rate.
//
//	client 192.0.2.1/31 ──eth0── r-cli 192.0.2.0/31
//	server 192.0.2.2/31 ──eth0── r-srv 192.0.2.3/31        router (forwards)
//	target 198.51.100.10/24 ─eth0── r-tgt 198.51.100.254/24
//
// The client and the server keep the two-host lab's addresses (Client1,
// ServerIP), so ServerURL, StartServer, APIClient and CanConnect work as is.
type RoutedLab struct {
	*Lab
	Router, Target *testenv.Netns
	// links are every interface the lab made, both ends of each pair.
	links []shapedEnd
}

type shapedEnd struct {
	ns  *testenv.Netns
	dev string
}

// RoutedTarget is the target's address in the routed lab.
var RoutedTarget = netip.MustParseAddr("198.51.100.10")

// NewRouted builds the routed lab (no sshd: it is for throughput). It skips
// (or under CI fails) tb without root.
func NewRouted(tb testing.TB) *RoutedLab {
	tb.Helper()
	testenv.RequireKernel(tb)
	testenv.RequireTool(tb, "tc")
	if binary == "" {
		tb.Fatal("testlab: no jitgate binary; call testlab.Run from TestMain")
	}
	r := &RoutedLab{Lab: &Lab{tb: tb, ClientNS: testenv.NewNetns(tb), ServerNS: testenv.NewNetns(tb), Dir: tb.TempDir(), Binary: binary},
		Router: testenv.NewNetns(tb), Target: testenv.NewNetns(tb)}
	routerInside := netip.MustParseAddr("198.51.100.254")
	hosts := []struct {
		ns           *testenv.Netns
		routerDev    string
		host, router netip.Prefix
	}{
		{r.ClientNS, "r-cli", netip.PrefixFrom(Client1, 31), netip.MustParsePrefix("192.0.2.0/31")},
		{r.ServerNS, "r-srv", netip.PrefixFrom(ServerIP, 31), netip.MustParsePrefix("192.0.2.3/31")},
		{r.Target, "r-tgt", netip.PrefixFrom(RoutedTarget, 24), netip.PrefixFrom(routerInside, 24)},
	}
	for _, h := range hosts {
		testenv.NewLink(tb,
			testenv.LinkEnd{NS: h.ns, Name: "eth0", Addrs: []netip.Prefix{h.host}},
			testenv.LinkEnd{NS: r.Router, Name: h.routerDev, Addrs: []netip.Prefix{h.router}})
		h.ns.Run(tb, "ip", "route", "add", "default", "via", h.router.Addr().String())
		r.links = append(r.links, shapedEnd{h.ns, "eth0"}, shapedEnd{r.Router, h.routerDev})
	}
	r.Router.Run(tb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return r
}

// StartTargetAgent starts the agent on the target, talking to the server
// through the router; enrollToken is needed only the first time.
func (r *RoutedLab) StartTargetAgent(enrollToken string) {
	r.tb.Helper()
	args := []string{"agent", "--server", fmt.Sprintf("http://%s:%d", ServerIP, APIPort), "--insecure-http",
		"--state-dir", filepath.Join(r.Dir, "agent")}
	if enrollToken != "" {
		args = append(args, "--enroll-token", enrollToken)
	}
	r.Agent = r.Start(r.Target, "jitgate agent", r.Binary, args...)
}

// Shape limits every interface of the lab (both ends of every link, so
// each direction of each link) to rateMbit with a token bucket filter
// (tc tbf), and adds delay (netem, when the kernel has it) if delay > 0.
// rateMbit 0 removes the shaping: the links then run as fast as the CPU
// copies packets.
func (r *RoutedLab) Shape(rateMbit int, delay time.Duration) {
	r.tb.Helper()
	for _, e := range r.links {
		// Removing a root qdisc that is not there fails; that is fine.
		e.ns.Command(r.tb.Context(), "tc", "qdisc", "del", "dev", e.dev, "root").Run()
		if rateMbit == 0 {
			continue
		}
		// The bucket holds 1 ms at the rate, and at least 128 KiB so that a
		// GSO packet (up to 64 KiB) always fits; 10 ms of queue.
		burst := max(rateMbit*1000/8, 128<<10)
		args := []string{"qdisc", "add", "dev", e.dev, "root", "handle", "1:", "tbf", "rate", fmt.Sprintf("%dmbit", rateMbit),
			"burst", fmt.Sprint(burst), "latency", "10ms"}
		if out, err := e.ns.Command(r.tb.Context(), "tc", args...).CombinedOutput(); err != nil {
			r.tb.Fatalf("tc %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if delay > 0 {
			args := []string{"qdisc", "add", "dev", e.dev, "parent", "1:1", "handle", "10:", "netem", "delay",
				fmt.Sprintf("%dus", delay.Microseconds())}
			if out, err := e.ns.Command(r.tb.Context(), "tc", args...).CombinedOutput(); err != nil {
				r.tb.Fatalf("tc %s (netem is not in every kernel): %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}
}
