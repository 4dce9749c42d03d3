//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
)

const (
	packetWindow   = 2 * time.Second        // per configuration and round
	packetSlice    = 500 * time.Millisecond // windows are measured in interleaved slices
	packetRounds   = 3
	packetDialers  = 2
	packetSettle   = 2 * time.Second
	iperfSeconds   = 2
	iperfPort      = 5201
	targetRatio100 = 0.90 // jitgate's rate at N=100,000 over N=0
)

// The numbers of other grants each configuration holds (BENCH_PACKET_NS,
// comma-separated, overrides: "0,1000000" for the flatness at a million), and
// the kinds measured (BENCH_PACKET_KINDS: "jitgate" leaves out the iptables
// chain, whose load alone takes hours at a million rules).
var packetNs = envInts("BENCH_PACKET_NS", []int{0, 1_000, 10_000, 100_000})

// readBackMax is the largest set the benchmark lists to count its
// elements: the kernel lists a set in time quadratic in its size (minutes
// at a million elements; see internal/firewall/nft/statefile.go).
const readBackMax = 200_000

func envInts(name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			panic(fmt.Sprintf("%s=%q: want comma-separated counts", name, v))
		}
		out = append(out, n)
	}
	return out
}

func packetKinds() []string {
	if v := os.Getenv("BENCH_PACKET_KINDS"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"jitgate", "iptables"}
}

// PathConfig is one ruleset with N other grants, on a server host of its own.
type PathConfig struct {
	Kind string `json:"kind"` // jitgate (set) or iptables (chain)
	N    int    `json:"n"`
	// Loaded is what was read back: set elements, or INPUT rules.
	Loaded      int     `json:"loaded"`
	LoadSeconds float64 `json:"load_s"`
	// ControlRate is the rate in the control round, when every host of
	// the kind held only the client's grants (N=0): the host's own speed.
	ControlRate float64   `json:"control_conn_per_s"`
	Rates       []float64 `json:"conn_per_s"`
	Median      float64   `json:"median_conn_per_s"`
	Ratio       float64   `json:"ratio_to_n0"`
	// Throughput of one iperf3 TCP stream through the protected port.
	Gbps        []float64 `json:"gbit_per_s"`
	MedianGbps  float64   `json:"median_gbit_per_s"`
	GbpsRatio   float64   `json:"gbps_ratio_to_n0"`
	AddOneMS    float64   `json:"add_one_grant_ms"`
	client, dst netip.Addr
	ns          *testenv.Netns
	// loaded and be, above readBackMax: the ruleset the load applied and
	// the backend that applied it.
	loaded firewall.Ruleset
	be     *nft.Backend
}

// PacketPath is what TestPacketPath writes to results/packet_path.json.
type PacketPath struct {
	Dialers       int           `json:"dialers"`
	WindowSeconds float64       `json:"window_s"`
	SliceSeconds  float64       `json:"slice_s"`
	Rounds        int           `json:"rounds"`
	IperfSeconds  int           `json:"iperf_s"`
	Configs       []*PathConfig `json:"configs"`
	Errors        int64         `json:"errors"`
	Target        float64       `json:"target_ratio_jitgate_100k"`
	Met           bool          `json:"met"`
}

// TestPacketPath measures new TCP connections per second and the
// throughput of one TCP stream from a granted source through a protected
// port with N = 0, 1,000, 10,000 and 100,000 other grants, for jitgate's
// set-based ruleset and for a chain of one iptables rule per grant.
//
// Each of the eight configurations lives on a server host of its own, all
// linked to one client host, so that they can be interleaved finely without
// reloading: each round gives each configuration packetWindow in 0.5 s
// slices, in an order that rotates every slice, so all see the same
// background load of a shared machine. A control round, before the grants
// are loaded, measures how alike the hosts are by themselves.
func TestPacketPath(t *testing.T) {
	if slices.Contains(packetKinds(), "iptables") {
		testenv.RequireTool(t, "iptables-restore")
	}
	testenv.RequireTool(t, "iperf3")
	client := testenv.NewNetns(t)
	client.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535")
	res := PacketPath{Dialers: packetDialers, WindowSeconds: packetWindow.Seconds(), SliceSeconds: packetSlice.Seconds(),
		Rounds: packetRounds, IperfSeconds: iperfSeconds, Target: targetRatio100}
	for _, kind := range packetKinds() {
		for _, n := range packetNs {
			i := len(res.Configs)
			c := &PathConfig{Kind: kind, N: n, ns: testenv.NewNetns(t),
				client: netip.AddrFrom4([4]byte{198, 51, 100, byte(4*i + 1)}), dst: netip.AddrFrom4([4]byte{198, 51, 100, byte(4*i + 2)})}
			testenv.NewLink(t,
				testenv.LinkEnd{NS: client, Name: fmt.Sprintf("eth%d", i), Addrs: []netip.Prefix{netip.PrefixFrom(c.client, 30)}},
				testenv.LinkEnd{NS: c.ns, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(c.dst, 30)}})
			serve(t, c.ns, benchPort)
			startIperf(t, c.ns)
			res.Configs = append(res.Configs, c)
		}
	}

	// round measures every configuration for packetWindow, in slices.
	round := func() []float64 {
		conns := make([]int64, len(res.Configs))
		for s := range int(packetWindow / packetSlice) {
			for j := range res.Configs {
				k := (j + s) % len(res.Configs)
				if s%2 == 1 {
					k = len(res.Configs) - 1 - k
				}
				c := res.Configs[k]
				n, e := measure(t, client, dialTarget{c.client, netip.AddrPortFrom(c.dst, benchPort)}, packetSlice)
				conns[k] += n
				res.Errors += e
			}
		}
		rates := make([]float64, len(conns))
		for k, n := range conns {
			rates[k] = float64(n) / packetWindow.Seconds()
		}
		return rates
	}

	// Control: every host with the client's grants only.
	for _, c := range res.Configs {
		c.load(t, 0)
	}
	for _, c := range res.Configs {
		measure(t, client, dialTarget{c.client, netip.AddrPortFrom(c.dst, benchPort)}, 300*time.Millisecond) // warm-up
	}
	for k, r := range round() {
		res.Configs[k].ControlRate = r
	}
	for _, c := range res.Configs {
		if c.N > 0 {
			c.load(t, c.N)
		}
		t.Logf("%-8s N=%6d: loaded %d in %.2f s; control round %6.0f new connections/s", c.Kind, c.N, c.Loaded, c.LoadSeconds, c.ControlRate)
	}
	runtime.GC()
	time.Sleep(packetSettle)
	for range packetRounds {
		for k, r := range round() {
			res.Configs[k].Rates = append(res.Configs[k].Rates, r)
		}
		off := len(res.Configs[0].Gbps)
		for j := range res.Configs {
			c := res.Configs[(j+off)%len(res.Configs)]
			c.Gbps = append(c.Gbps, iperf(t, client, c))
		}
	}
	for _, c := range res.Configs {
		c.AddOneMS = c.addOne(t)
	}
	base := map[string]*PathConfig{}
	for _, c := range res.Configs {
		c.Median, c.MedianGbps = median(c.Rates), median(c.Gbps)
		if c.N == 0 {
			base[c.Kind] = c
		}
		c.Ratio, c.GbpsRatio = c.Median/base[c.Kind].Median, c.MedianGbps/base[c.Kind].MedianGbps
		t.Logf("%-8s N=%6d: %6.0f new connections/s (rounds %.0f; ratio to N=0 %.3f; control %.0f), %.2f Gbit/s (ratio %.3f), adding one grant %.2f ms",
			c.Kind, c.N, c.Median, c.Rates, c.Ratio, c.ControlRate, c.MedianGbps, c.GbpsRatio, c.AddOneMS)
		if c.Kind == "jitgate" && c.N >= 100_000 {
			res.Met = c.Ratio >= targetRatio100
		}
	}
	t.Logf("target: jitgate at 100,000 grants >= %.2f of N=0: %v; %d failed connections", targetRatio100, res.Met, res.Errors)
	writeResult(t, "packet_path", res)
}

// otherGrants are n /32 sources from 198.18.0.0/15 (RFC 2544 benchmarking
// range), inside the namespaces only.
func otherGrants(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for a := netip.MustParseAddr("198.18.0.0"); len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out
}

// load makes c's host hold its ruleset with n other grants.
func (c *PathConfig) load(t *testing.T, n int) {
	t.Helper()
	start := time.Now()
	switch c.Kind {
	case "jitgate":
		now := time.Now()
		rs := c.jitgateRuleset(now)
		for i, a := range otherGrants(n) {
			// Alternate deadlines so that neighbouring addresses stay separate elements.
			rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(a, 32), Proto: firewall.TCP, Port: benchPort,
				Expires: now.Add(time.Hour + time.Duration(i%2)*time.Second)})
		}
		be := c.backend(t)
		if _, err := be.Apply(context.Background(), rs, time.Now()); err != nil {
			t.Fatal(err)
		}
		c.LoadSeconds = time.Since(start).Seconds()
		if n > readBackMax {
			c.loaded, c.be = rs, be
			c.Loaded = -1
			t.Logf("jitgate N=%d: not listed back (quadratic in the kernel); the Apply reported no error", n)
			return
		}
		st, err := be.State(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.Loaded = len(st.Elements)
		if c.Loaded != n+2 {
			t.Fatalf("jitgate N=%d: %d elements read back, want %d", n, c.Loaded, n+2)
		}
	case "iptables":
		var b strings.Builder
		b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
		b.WriteString("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
		for _, a := range otherGrants(n) {
			fmt.Fprintf(&b, "-A INPUT -s %s/32 -p tcp -m tcp --dport %d -j ACCEPT\n", a, benchPort)
		}
		// The client's grants come last, as the newest rules of a chain
		// that grows by appending: every new connection walks all others.
		for _, p := range []int{benchPort, iperfPort} {
			fmt.Fprintf(&b, "-A INPUT -s %s/32 -p tcp -m tcp --dport %d -j ACCEPT\n", c.client, p)
		}
		for _, p := range []int{benchPort, iperfPort} {
			fmt.Fprintf(&b, "-A INPUT -p tcp -m tcp --dport %d -j DROP\n", p)
		}
		b.WriteString("COMMIT\n")
		cmd := c.ns.Command(context.Background(), "iptables-restore")
		cmd.Stdin = strings.NewReader(b.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("iptables-restore (N=%d): %v: %s", n, err, out)
		}
		c.LoadSeconds = time.Since(start).Seconds()
		out := c.ns.Run(t, "iptables-save", "-t", "filter")
		c.Loaded = strings.Count(out, "\n-A INPUT ")
		if want := n + 5; c.Loaded != want {
			t.Fatalf("iptables N=%d: %d INPUT rules, want %d", n, c.Loaded, want)
		}
	}
}

func (c *PathConfig) jitgateRuleset(now time.Time) firewall.Ruleset {
	rs := firewall.Ruleset{Protected: []firewall.PortKey{{Proto: firewall.TCP, Port: benchPort}, {Proto: firewall.TCP, Port: iperfPort}}}
	for _, p := range []uint16{benchPort, iperfPort} {
		rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(c.client, 32), Proto: firewall.TCP, Port: p, Expires: now.Add(2 * time.Hour)})
	}
	return rs
}

func (c *PathConfig) backend(t *testing.T) *nft.Backend {
	be, err := nft.New(nft.WithNetNSFd(c.ns.FD()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// addOne times adding one more grant: one nft backend Apply of the whole
// state plus one, as an agent's steady state does it (the backend has read
// the table once before), or one `iptables -A`.
func (c *PathConfig) addOne(t *testing.T) float64 {
	t.Helper()
	extra := netip.MustParseAddr("203.0.113.77")
	switch c.Kind {
	case "jitgate":
		if c.N > readBackMax {
			// Listing a million elements takes minutes (quadratic in the
			// kernel): add to the ruleset the load applied, through the
			// backend that applied it (its cache stands for a read).
			rs := c.loaded
			rs.Grants = append(rs.Grants[:len(rs.Grants):len(rs.Grants)], firewall.Grant{Source: netip.PrefixFrom(extra, 32), Proto: firewall.TCP, Port: benchPort, Expires: time.Now().Add(time.Hour)})
			start := time.Now()
			r, err := c.be.Apply(context.Background(), rs, time.Now())
			if err != nil || r.Added != 1 {
				t.Fatalf("adding one grant at N=%d: %+v, %v", c.N, r, err)
			}
			return ms(time.Since(start))
		}
		now := time.Now()
		be := c.backend(t)
		st, err := be.State(context.Background(), now)
		if err != nil {
			t.Fatal(err)
		}
		rs := c.jitgateRuleset(now)
		rs.Grants = rs.Grants[:0]
		for _, e := range st.Elements {
			rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(e.From, 32), Proto: e.Proto, Port: e.Port, Expires: e.Expires})
		}
		if _, err := be.Apply(context.Background(), rs, time.Now()); err != nil { // reads the table once, as an agent's first Apply
			t.Fatal(err)
		}
		rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(extra, 32), Proto: firewall.TCP, Port: benchPort, Expires: now.Add(time.Hour)})
		start := time.Now()
		r, err := be.Apply(context.Background(), rs, time.Now())
		if err != nil || r.Added != 1 {
			t.Fatalf("adding one grant at N=%d: %+v, %v", c.N, r, err)
		}
		return ms(time.Since(start))
	default:
		start := time.Now()
		if _, err := execIn(c.ns, "iptables", "-A", "INPUT", "-s", extra.String(), "-p", "tcp", "--dport", fmt.Sprint(benchPort), "-j", "ACCEPT"); err != nil {
			t.Fatal(err)
		}
		return ms(time.Since(start))
	}
}

func startIperf(t *testing.T, ns *testenv.Netns) {
	t.Helper()
	cmd := ns.Command(context.Background(), "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// iperf runs one iperf3 TCP stream from the client's granted source to c's
// host and returns the received rate in Gbit/s.
func iperf(t *testing.T, client *testenv.Netns, c *PathConfig) float64 {
	t.Helper()
	var (
		out []byte
		err error
	)
	for range 50 { // the server may still be starting
		out, err = execIn(client, "iperf3", "-c", c.dst.String(), "-p", fmt.Sprint(iperfPort), "-B", c.client.String(),
			"-t", fmt.Sprint(iperfSeconds), "-J")
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("iperf3 to %s N=%d: %v: %s", c.Kind, c.N, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("iperf3 output: %v", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

type dialTarget struct {
	src netip.Addr
	dst netip.AddrPort
}

// measure opens and closes connections to.src -> to.dst from packetDialers
// goroutines in ns for d, and returns how many completed and how many failed.
func measure(t *testing.T, ns *testenv.Netns, to dialTarget, d time.Duration) (conns, errs int64) {
	t.Helper()
	var wg sync.WaitGroup
	var n, e atomic.Int64
	end := time.Now().Add(d)
	for range packetDialers {
		wg.Go(func() {
			err := ns.Do(func() error {
				dialer := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: to.src.AsSlice()}}
				for time.Now().Before(end) {
					c, err := dialer.Dial("tcp", to.dst.String())
					if err != nil {
						if e.Add(1) > 100 {
							return fmt.Errorf("too many failed connections, last: %w", err)
						}
						continue
					}
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
					n.Add(1)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	return n.Load(), e.Load()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
