//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	netIperfPort    = 5201
	netIperfSeconds = 6
	netRounds       = 3
	netLocal        = "127.0.0.1:15201"
)

// netRates are the link rates TestBastionNetwork shapes to, in Mbit/s; 0
// is unshaped (the links as fast as the CPU copies packets).
// BENCH_RATES=1000,0 picks others.
var netRates = []int{1000, 2500, 10000, 0}

// NetworkRate is one link rate's result in results/bastion_network.json.
type NetworkRate struct {
	// RateMbit is every link's rate in each direction (0: unshaped).
	RateMbit   int       `json:"link_rate_mbit"`
	DirectMbps []float64 `json:"direct_mbps"`
	TunnelMbps []float64 `json:"tunnel_mbps"`
	// Ratio is the tunnel's median over the direct path's median.
	Ratio float64 `json:"tunnel_over_direct_median"`
	// RelayCores is the CPU the three relay processes (jitgate connect,
	// server, agent) used during the tunnel runs, in cores (1.0 = one core
	// busy the whole time), and RelayCPUPerGB their CPU-seconds per GB
	// carried: when RelayCores nears the machine's spare cores, the
	// tunnel is CPU-bound, not link-bound.
	RelayCores    float64 `json:"relay_cores"`
	RelayCPUPerGB float64 `json:"relay_cpu_seconds_per_gb"`
	Load          string  `json:"loadavg_after"`
}

// BastionNetwork is what TestBastionNetwork writes to
// results/bastion_network.json.
type BastionNetwork struct {
	LinkDelay   string        `json:"link_delay"`
	Rates       []NetworkRate `json:"rates"`
	TargetRatio float64       `json:"target_ratio"`
	LoadBefore  string        `json:"loadavg_before"`
}

// TestBastionNetwork measures a tunnel's throughput against the direct
// path on a shaped network, the way users meet it: the client, the jitgate
// server and the target (with its agent and the iperf3 server) in their own
// namespaces, each on its own link to a router, every link limited by tc
// to the same rate. The direct path (client → router → target, opened by a
// kernel grant for the client's address) and the tunnel (client →
// `jitgate connect` → router → server → router → agent → target's
// iperf3) cross those links in the same run, alternating, so the ratio
// compares like with like. Unshaped, both paths are bound by the CPU of
// this machine instead, which is what TestBastion and BenchmarkTCPFloor
// measure.
func TestBastionNetwork(t *testing.T) {
	testenv.RequireTool(t, "iperf3")
	rates := netRates
	if s := os.Getenv("BENCH_RATES"); s != "" {
		rates = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("BENCH_RATES=%q: %v", s, err)
			}
			rates = append(rates, n)
		}
	}
	var delay time.Duration
	if s := os.Getenv("BENCH_LINK_DELAY"); s != "" {
		var err error
		if delay, err = time.ParseDuration(s); err != nil {
			t.Fatalf("BENCH_LINK_DELAY=%q: %v", s, err)
		}
	}

	r := testlab.NewRouted(t)
	r.StartServer()
	api := r.APIClient()
	ctx := context.Background()
	created, err := api.CreateTarget(ctx, wire.TargetCreate{Name: target})
	if err != nil {
		t.Fatal(err)
	}
	r.StartTargetAgent(created.EnrollToken)
	waitAgent(t, r.Lab, api)
	if _, err := api.SetPolicy(ctx, target, wire.Policy{Rules: []wire.PortRule{{Port: netIperfPort, Protocol: "tcp",
		MaxDuration: wire.Duration(time.Hour), Access: "both"}}}); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, r.Lab, api)
	r.Start(r.Target, "iperf3 server", "iperf3", "-s", "-p", fmt.Sprint(netIperfPort))
	r.Eventually("iperf3 listening on the target", 10*time.Second, func() bool {
		c, err := r.Target.DialContext(ctx, &net.Dialer{Timeout: 300 * time.Millisecond}, "tcp", fmt.Sprintf("127.0.0.1:%d", netIperfPort))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if r.CanConnect(testlab.Client1, testlab.RoutedTarget, netIperfPort) {
		t.Fatal("the client reaches the target's iperf3 before any grant: the direct path would not be the kernel grant's")
	}
	grant := func(bastion bool) {
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{fmt.Sprintf("%d/tcp", netIperfPort)},
			Bastion: bastion, Duration: wire.Duration(time.Hour), Reason: "network benchmark"})
		if err != nil {
			t.Fatal(err)
		}
		r.Eventually("the grant is active", 10*time.Second, func() bool {
			q, err := api.Request(ctx, req.ID)
			return err == nil && q.State == "active"
		})
	}
	grant(false) // direct: the server sees the client's own address (no NAT on the router)
	grant(true)
	r.Eventually("the kernel grant opens the target's port to the client", 10*time.Second, func() bool {
		return r.CanConnect(testlab.Client1, testlab.RoutedTarget, netIperfPort)
	})
	connect := r.Start(r.ClientNS, "jitgate connect (iperf3)", r.Binary, "connect", target, "--port", fmt.Sprint(netIperfPort),
		"--local", netLocal, "--server", testlab.ServerURL, "--token", r.Token)
	r.Eventually("the local tunnel listening", 10*time.Second, func() bool {
		return r.ClientNS.Do(func() error {
			c, err := net.DialTimeout("tcp", netLocal, 300*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
	relay := []*testlab.Proc{connect, r.Server, r.Agent}

	res := BastionNetwork{LinkDelay: delay.String(), TargetRatio: targetThroughputRatio, LoadBefore: loadavg()}
	for _, rate := range rates {
		r.Shape(rate, delay)
		nr := NetworkRate{RateMbit: rate}
		var cpu, wall, bytes float64
		for range netRounds {
			nr.DirectMbps = append(nr.DirectMbps, iperfFrom(t, r.ClientNS, testlab.RoutedTarget.String(), netIperfPort, netIperfSeconds))
			before, start := cpuSeconds(t, relay), time.Now()
			mbps := iperfFrom(t, r.ClientNS, "127.0.0.1", 15201, netIperfSeconds)
			cpu += cpuSeconds(t, relay) - before
			wall += time.Since(start).Seconds()
			bytes += mbps * 1e6 / 8 * netIperfSeconds
			nr.TunnelMbps = append(nr.TunnelMbps, mbps)
		}
		nr.Ratio = medianOf(nr.TunnelMbps) / medianOf(nr.DirectMbps)
		nr.RelayCores = cpu / wall
		nr.RelayCPUPerGB = cpu / (bytes / 1e9)
		nr.Load = loadavg()
		t.Logf("links %s: direct %v Mbit/s, tunnel %v Mbit/s: ratio %.2f; relay processes %.2f cores, %.2f CPU-s/GB; load %s",
			rateName(rate), rounded(nr.DirectMbps), rounded(nr.TunnelMbps), nr.Ratio, nr.RelayCores, nr.RelayCPUPerGB, nr.Load)
		res.Rates = append(res.Rates, nr)
	}
	writeResult(t, "bastion_network", res)
}

func rateName(mbit int) string {
	switch {
	case mbit == 0:
		return "unshaped (CPU-bound)"
	case mbit%1000 == 0:
		return fmt.Sprintf("%d Gbit/s", mbit/1000)
	default:
		return fmt.Sprintf("%g Gbit/s", float64(mbit)/1000)
	}
}

func rounded(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int(x + 0.5))
	}
	return out
}

func medianOf(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// cpuSeconds is the user and system CPU time the processes have used.
func cpuSeconds(t *testing.T, ps []*testlab.Proc) float64 {
	var total float64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		// Fields after the command name (which may hold spaces) in ")".
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / 100 // USER_HZ
	}
	return total
}

// iperfFrom runs an iperf3 client in ns against host:port for secs and
// returns the received rate in Mbit/s.
func iperfFrom(t *testing.T, ns *testenv.Netns, host string, port, secs int) float64 {
	t.Helper()
	for attempt := 0; ; attempt++ {
		out, err := ns.Command(context.Background(), "iperf3", "-c", host, "-p", fmt.Sprint(port), "-t", fmt.Sprint(secs), "-J").Output()
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
			Error string `json:"error"`
		}
		if jerr := json.Unmarshal(out, &res); err == nil && jerr == nil && res.Error == "" {
			return res.End.SumReceived.BitsPerSecond / 1e6
		}
		// iperf3's server serves one test at a time and may still be
		// finishing the previous one.
		if attempt == 3 {
			t.Fatalf("iperf3 to %s:%d: %v %s: %s", host, port, err, res.Error, out)
		}
		time.Sleep(time.Second)
	}
}
