//go:build bench

package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	latencyTrials = 200 // recorded per path
	latencyWarmup = 10  // run first and not recorded
	latencyLimit  = 2 * time.Second
)

// Targets of issue 13 (API call to first packet, idle machine; issue 1's
// were 5 and 25 ms).
const (
	targetLatencyP50 = 2.0 // ms
	targetLatencyP99 = 5.0 // ms
)

// fwknopDefaultModeMS is fwknop's time from SPA packet to open port in its
// default capture mode, from the field notes: context only, not measured here.
const fwknopDefaultModeMS = 126

// GrantLatency is what TestGrantLatency writes to results/grant_latency.json.
type GrantLatency struct {
	Trials int `json:"trials"`
	// Instrument says how "first connection" is observed: for every
	// *_open figure, a process of its own that waits for the kernel's
	// notification of the new set element, then sends a SYN every
	// PollIntervalMS until the first SYN-ACK (eventPoll: never early, late
	// by the notification's wake-up and a round trip, and idle until the
	// grant is there); the fine pollers, which send from the call on (in
	// their process: jitgate_open_fine_poller; in the test process:
	// jitgate_open_inprocess_poller, the figures before 2026-12-07 20:00);
	// and the dial
	// poller of earlier runs (newPoller: one dial at a time with a
	// PollTimeoutMS timeout, so up to that much late) for the *_open_dial
	// figures, measured in the same run so that the change of instrument
	// is not read as a change of jitgate.
	Instrument     string  `json:"instrument"`
	PollIntervalMS float64 `json:"poll_interval_ms"`
	PollTimeoutMS  float64 `json:"poll_timeout_ms"`
	// Jitgate is from the POST /api/v1/requests call to the first TCP
	// connection from the granted source that completes.
	Jitgate     Summary `json:"jitgate_open"`
	JitgateDial Summary `json:"jitgate_open_dial"`
	// PollAttempts is the fine poller's mean connection attempts per
	// jitgate trial (its CPU cost).
	PollAttempts float64 `json:"jitgate_fine_poll_attempts_mean"`
	// JitgateFine is the fine poller in a process of its own (synPoll: a
	// SYN every PollIntervalMS from the call on), the *_open figures of
	// 2026-12-07 19:56-20:10.
	JitgateFine    Summary `json:"jitgate_open_fine_poller"`
	JitgateAPIFine Summary `json:"jitgate_api_call_fine_poller"`
	// JitgateInProcess is the fine poller run inside the test process, as
	// before 2026-12-07 20:00 (the *_open figures now come from the same
	// loop in a process of its own: procpoller_test.go says why).
	JitgateInProcess Summary `json:"jitgate_open_inprocess_poller"`
	// JitgateAPI is the POST call alone (the answer says pending), in the
	// fine poller's trials.
	JitgateAPI Summary `json:"jitgate_api_call"`
	// JitgateAPIInProcess, JitgateAPIDial and JitgateAPINoPoller are the
	// same call in the trials of the in-process fine poller, of the dial
	// poller and with no poller at all (the opening then not timed): the
	// kinds of jitgate trial alternate, so that each poller's cost to the
	// call is seen apart from the drift of a shared machine.
	JitgateAPIInProcess Summary `json:"jitgate_api_call_inprocess_poller"`
	JitgateAPIDial      Summary `json:"jitgate_api_call_dial"`
	JitgateAPINoPoller  Summary `json:"jitgate_api_call_no_poller"`
	// JitgateActivated is from the call to the activation instant the server
	// recorded (millisecond resolution), once the agent confirmed.
	JitgateActivated Summary `json:"jitgate_activated"`
	// Kernel is one nft backend Apply adding the grant, then polling.
	Kernel     Summary `json:"kernel_apply_open"`
	KernelDial Summary `json:"kernel_apply_open_dial"`
	KernelCall Summary `json:"kernel_apply_call"`
	// NftBinary is `nft add element` run in the server namespace, then polling.
	NftBinary     Summary `json:"nft_binary_open"`
	NftBinaryCall Summary `json:"nft_binary_call"`

	RatioToKernel    float64 `json:"jitgate_p50_over_kernel_p50"`
	RatioToNftBinary float64 `json:"jitgate_p50_over_nft_binary_p50"`
	TargetP50MS      float64 `json:"target_p50_ms"`
	TargetP99MS      float64 `json:"target_p99_ms"`
	MetP50           bool    `json:"met_p50"`
	MetP99           bool    `json:"met_p99"`
	FwknopContextMS  float64 `json:"fwknop_default_mode_ms_from_field_notes"`
}

// clientPool is 192.0.2.10-192.0.2.249: a fresh source per trial.
func clientPool() []netip.Addr {
	var pool []netip.Addr
	for i := 10; i < 250; i++ {
		pool = append(pool, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	return pool
}

// TestGrantLatency measures the time from asking to the first connection
// through the grant, for jitgate (API, server, agent, kernel) and for the
// kernel path alone (one netlink Apply; one `nft add element`).
func TestGrantLatency(t *testing.T) {
	l := testlab.New(t)
	pool := clientPool()
	l.AddClientAddrs(pool...)
	serve(t, l.ServerNS, benchPort)
	fine := startProcPoller(t, l.ClientNS, nil).instrument
	event := startProcPoller(t, l.ClientNS, l.ServerNS).instrument
	ctx := context.Background()
	res := GrantLatency{Trials: latencyTrials, PollIntervalMS: ms(finePollInterval), PollTimeoutMS: ms(pollTimeout),
		Instrument: fmt.Sprintf("*_open: a process of its own waits for the kernel's notification of the element, then sends a SYN every %s until the first SYN-ACK (never early; late by a wake-up and a round trip); *_open_fine_poller: a SYN every %s from the call on, from that process; *_open_inprocess_poller: a connect every 0.1 ms from the test process (until 2026-12-07 20:00); *_open_dial: one dial at a time with a %s timeout (up to %s late); jitgate's trials alternate these and no poller",
			finePollInterval, finePollInterval, pollTimeout, pollTimeout),
		TargetP50MS: targetLatencyP50, TargetP99MS: targetLatencyP99, FwknopContextMS: fwknopDefaultModeMS}

	// trial runs one measurement from src: open starts the poller's clock
	// and returns the duration of the call that grants; close ends the grant.
	type instrument func(ns *testenv.Netns, src netip.Addr, limit time.Duration) *poller
	var attempts []int // per recorded trial of the last run
	trial := func(i int, poll instrument, open func(src netip.Addr) error, closeGrant func(src netip.Addr) error) (total, call time.Duration, n int) {
		t.Helper()
		src := pool[i%len(pool)]
		var p *poller
		if poll != nil {
			p = poll(l.ClientNS, src, latencyLimit)
		}
		if p != nil && p.kick != nil {
			// Before the clock starts: the poller's process wakes in
			// parallel, and a connection it completes before the call
			// would mean the grant was there before it was asked for.
			p.kick()
		}
		t0 := time.Now()
		if p != nil && p.kick == nil {
			close(p.start)
		}
		if err := open(src); err != nil {
			t.Fatalf("trial %d from %s: %v", i, src, err)
		}
		call = time.Since(t0)
		var r pollResult
		if p != nil {
			if r = <-p.done; r.err != nil {
				t.Fatalf("trial %d from %s: %v", i, src, r.err)
			}
		}
		if err := closeGrant(src); err != nil {
			t.Fatalf("trial %d: ending the grant of %s: %v", i, src, err)
		}
		if err := waitClosed(l.ClientNS, src, latencyLimit); err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		time.Sleep(10*time.Millisecond + rand.N(10*time.Millisecond)) // no phase lock with the loops under test
		if p == nil {
			return 0, call, 0
		}
		return r.at.Sub(t0), call, r.attempts
	}
	run := func(name string, poll instrument, open, closeGrant func(src netip.Addr) error) (Summary, Summary) {
		var totals, calls []time.Duration
		attempts = attempts[:0]
		for i := range latencyWarmup + latencyTrials {
			total, call, n := trial(i, poll, open, closeGrant)
			if i >= latencyWarmup {
				totals, calls = append(totals, total), append(calls, call)
				attempts = append(attempts, n)
			}
		}
		s, c := summarize(totals), summarize(calls)
		t.Logf("%-26s open: %s", name, s)
		t.Logf("%-26s call: %s", name, c)
		return s, c
	}

	// Kernel path alone: the nft backend in the server namespace, no jitgate process.
	be, err := nft.New(nft.WithNetNSFd(l.ServerNS.FD()))
	if err != nil {
		t.Fatal(err)
	}
	port := firewall.PortKey{Proto: firewall.TCP, Port: benchPort}
	base := firewall.Ruleset{Protected: []firewall.PortKey{port}}
	if _, err := be.Apply(ctx, base, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := waitClosed(l.ClientNS, pool[0], latencyLimit); err != nil {
		t.Fatalf("protected port not closed: %v", err)
	}
	if out, err := execIn(l.ServerNS, "nft", "list", "table", "inet", "jitgate"); err != nil {
		t.Fatalf("nft run on a thread in the server namespace does not see the table: %v: %s", err, out)
	}
	kernelOpen := func(src netip.Addr) error {
		rs := base
		rs.Grants = []firewall.Grant{{Source: netip.PrefixFrom(src, 32), Proto: port.Proto, Port: port.Port, Expires: time.Now().Add(10 * time.Minute)}}
		_, err := be.Apply(ctx, rs, time.Now())
		return err
	}
	kernelClose := func(netip.Addr) error {
		_, err := be.Apply(ctx, base, time.Now())
		return err
	}
	res.KernelDial, _ = run("kernel (netlink Apply), 1 ms dial poller", newPoller, kernelOpen, kernelClose)
	res.Kernel, res.KernelCall = run("kernel (netlink Apply)", event, kernelOpen, kernelClose)

	elem := func(src netip.Addr, timeout string) string {
		return "{ " + src.String() + " . tcp . 2222" + timeout + " }"
	}
	res.NftBinary, res.NftBinaryCall = run("nft add element (binary)", event, func(src netip.Addr) error {
		out, err := execIn(l.ServerNS, "nft", "add", "element", "inet", "jitgate", "hosts4", elem(src, " timeout 600s"))
		if err != nil {
			t.Logf("nft: %s", out)
		}
		return err
	}, func(src netip.Addr) error {
		out, err := execIn(l.ServerNS, "nft", "delete", "element", "inet", "jitgate", "hosts4", elem(src, ""))
		if err != nil {
			t.Logf("nft: %s", out)
		}
		return err
	})
	if err := be.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	be.Close()

	// jitgate: the typed client in the client namespace, the real server and agent.
	api := setupJitgate(t, l)
	var activated []time.Duration
	var reqID string
	var t0 time.Time
	jitgateOpen := func(src netip.Addr) error {
		t0 = time.Now()
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: src.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: grant latency"})
		reqID = req.ID
		return err
	}
	jitgateClose := func(netip.Addr) error {
		req, err := api.WaitRequest(ctx, reqID, "pending", 5*time.Second)
		if err != nil {
			return err
		}
		if req.State != "active" || req.ActivatedAt == nil {
			t.Fatalf("request %s is %s (%s), want active", req.ID, req.State, req.Message)
		}
		activated = append(activated, req.ActivatedAt.Sub(t0))
		_, err = api.Revoke(ctx, reqID, "bench")
		return err
	}
	// The kinds of trial in turn: the fine poller in its process, in the
	// test process, the dial poller, none.
	kinds := []struct {
		name string
		poll instrument
	}{{"jitgate (API to open)", event}, {"jitgate, fine poller", fine}, {"jitgate, in-process fine poller", newFinePoller},
		{"jitgate (API to open), 1 ms dial poller", newPoller}, {"jitgate (no poller)", nil}}
	var totals, calls [5][]time.Duration
	var fineAttempts []int
	var fineActivated []time.Duration
	for i := range len(kinds) * (latencyWarmup + latencyTrials) {
		k := i % len(kinds)
		total, call, n := trial(i, kinds[k].poll, jitgateOpen, jitgateClose)
		if i/len(kinds) < latencyWarmup {
			continue
		}
		calls[k] = append(calls[k], call)
		if k == 0 {
			totals[k], fineAttempts = append(totals[k], total), append(fineAttempts, n)
			fineActivated = append(fineActivated, activated[len(activated)-1])
		} else if kinds[k].poll != nil {
			totals[k] = append(totals[k], total)
		}
	}
	for k, kind := range kinds {
		if kind.poll != nil {
			t.Logf("%-26s open: %s", kind.name, summarize(totals[k]))
		}
		t.Logf("%-26s call: %s", kind.name, summarize(calls[k]))
	}
	res.Jitgate, res.JitgateAPI = summarize(totals[0]), summarize(calls[0])
	res.JitgateFine, res.JitgateAPIFine = summarize(totals[1]), summarize(calls[1])
	res.JitgateInProcess, res.JitgateAPIInProcess = summarize(totals[2]), summarize(calls[2])
	res.JitgateDial, res.JitgateAPIDial = summarize(totals[3]), summarize(calls[3])
	res.JitgateAPINoPoller = summarize(calls[4])
	for _, n := range fineAttempts {
		res.PollAttempts += float64(n) / float64(len(fineAttempts))
	}
	res.JitgateActivated = summarize(fineActivated)
	t.Logf("%-26s active: %s", "jitgate (server records)", res.JitgateActivated)

	res.RatioToKernel = res.Jitgate.P50 / res.Kernel.P50
	res.RatioToNftBinary = res.Jitgate.P50 / res.NftBinary.P50
	res.MetP50, res.MetP99 = res.Jitgate.P50 <= targetLatencyP50, res.Jitgate.P99 <= targetLatencyP99
	t.Logf("jitgate p50 / kernel p50 = %.2f; jitgate p50 / nft binary p50 = %.2f; fwknop default mode (field notes) ~%d ms",
		res.RatioToKernel, res.RatioToNftBinary, fwknopDefaultModeMS)
	t.Logf("targets: p50 <= %.0f ms: %v; p99 <= %.0f ms: %v", targetLatencyP50, res.MetP50, targetLatencyP99, res.MetP99)
	writeResult(t, "grant_latency", res)
}
