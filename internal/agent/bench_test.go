package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// nullServer takes reports and serves nothing: the benchmark hands the
// agent its answers directly.
type nullServer struct{}

func (nullServer) Desired(context.Context, int64, time.Duration) (wire.DesiredState, error) {
	return wire.DesiredState{}, nil
}
func (nullServer) Report(context.Context, wire.AgentReport) error { return nil }
func (nullServer) DesiredSince(context.Context, int64, int64, time.Duration) (wire.DesiredState, error) {
	return wire.DesiredState{}, nil
}

// BenchmarkAgentChange measures the agent's work for one change of its
// target's desired state at 10,000 and 100,000 live grants, against real
// nftables in a network namespace: from the server's answer (JSON) to the
// kernel batch sent and the report handed over. "snapshot" is the protocol
// before deltas (every change ships and applies the whole state: decode,
// convert, normalise, diff against the cached table, one batch); "delta" is
// one grant added and then removed by deltas (decode, Index update, one
// batch without reading the table). bytes/answer is the JSON the agent
// receives per change.
func BenchmarkAgentChange(b *testing.B) {
	testenv.RequireKernel(b)
	for _, n := range []int{10000, 100000} {
		now := time.Now()
		grant := func(i int) wire.GrantEntry {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
			return wire.GrantEntry{ID: int64(i + 1), Source: a.String() + "/128", Protocol: "tcp", Port: 22,
				ExpiresAt: now.Add(time.Hour + time.Duration(i%2)*time.Second).UTC()}
		}
		base := wire.DesiredState{Target: "web-01", Revision: 1, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
		for i := 0; i < n; i++ {
			base.Grants = append(base.Grants, grant(i))
		}
		setup := func(b *testing.B) *Agent {
			ns := testenv.NewNetns(b)
			be, err := nft.New(nft.WithNetNSFd(ns.FD()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { be.Close() })
			a, err := New(Config{StateDir: filepath.Join(b.TempDir(), "state"), Logger: benchLogger()}, be)
			if err != nil {
				b.Fatal(err)
			}
			a.srv, a.hwLoaded = nullServer{}, true
			a.setTarget("web-01")
			if !a.receive(context.Background(), base, time.Now()) || a.failed {
				b.Fatalf("the first snapshot was not applied: %v", a.Status().LastError)
			}
			return a
		}
		receive := func(b *testing.B, a *Agent, answer []byte) {
			var ds wire.DesiredState
			if err := json.Unmarshal(answer, &ds); err != nil {
				b.Fatal(err)
			}
			if a.receive(context.Background(), ds, time.Now()); a.failed || a.applied != ds.Revision {
				b.Fatalf("revision %d not applied: %v", ds.Revision, a.Status().LastError)
			}
		}

		b.Run(fmt.Sprintf("snapshot/%d", n), func(b *testing.B) {
			a := setup(b)
			rev := int64(1)
			var size int
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				rev++
				ds := base
				ds.Revision = rev
				ds.Grants = append(base.Grants[:n:n], grant(n+i))
				answer, _ := json.Marshal(ds)
				size = len(answer)
				b.StartTimer()
				receive(b, a, answer)
			}
			b.ReportMetric(float64(size), "bytes/answer")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/change")
		})

		b.Run(fmt.Sprintf("delta/%d", n), func(b *testing.B) {
			a := setup(b)
			if a.index == nil {
				b.Fatal("no index after the snapshot: deltas cannot follow")
			}
			rev := int64(1)
			var size int
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				g := grant(n + i)
				add, _ := json.Marshal(wire.DesiredState{Target: "web-01", Since: rev, Revision: rev + 1, ServerTime: time.Now().UTC(), Changed: []int64{g.ID}, Grants: []wire.GrantEntry{g}})
				del, _ := json.Marshal(wire.DesiredState{Target: "web-01", Since: rev + 1, Revision: rev + 2, ServerTime: time.Now().UTC(), Changed: []int64{g.ID}})
				rev += 2
				size = len(add)
				b.StartTimer()
				receive(b, a, add)
				receive(b, a, del)
			}
			if a.index.Elements() != n {
				b.Errorf("the index holds %d elements, want %d", a.index.Elements(), n)
			}
			b.ReportMetric(float64(size), "bytes/answer")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(2*b.N)/1000, "ms/change")
		})
	}
}

var _ firewall.DeltaApplier = (*nft.Backend)(nil)

// linesOf is ds as a server writes a snapshot in lines (api.writeSnapshot).
func linesOf(ds wire.DesiredState) []byte {
	head := ds
	head.Grants, head.Bastion, head.ServerTime = []wire.GrantEntry{}, nil, time.Time{}
	b, _ := json.Marshal(head)
	b = append(b, '\n')
	for _, g := range ds.Grants {
		b = wire.AppendGrantLine(b, g)
	}
	b, _ = wire.AppendDesiredTail(b, ds.Bastion, ds.ServerTime)
	return b
}

func benchLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// BenchmarkAgentRestart measures what a restarted agent does before its
// gate is reconciled, at 100,000 grants (BENCH_RESTART_GRANTS overrides):
// the kernel already holds the grants (an earlier agent applied them); a new
// Agent with a new netlink connection receives the snapshot's JSON, decodes
// it, reads the table once, and sends the difference (here: one grant
// missing, one extra). Real nftables in a network namespace.
func BenchmarkAgentRestart(b *testing.B) {
	testenv.RequireKernel(b)
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("BENCH_RESTART_GRANTS")); err == nil && v > 0 {
		n = v
	}
	now := time.Now()
	grant := func(i int) wire.GrantEntry {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		return wire.GrantEntry{ID: int64(i + 1), Source: a.String() + "/128", Protocol: "tcp", Port: 22,
			ExpiresAt: now.Add(time.Hour + time.Duration(i%2)*time.Second).UTC()}
	}
	base := wire.DesiredState{Target: "web-01", Revision: 1, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
	for i := 0; i < n; i++ {
		base.Grants = append(base.Grants, grant(i))
	}
	// BENCH_RESTART_LINES=1: the snapshot comes as lines
	// (wire.DesiredLinesType), as the agent asks for it, not as JSON.
	lines := os.Getenv("BENCH_RESTART_LINES") != ""
	ns := testenv.NewNetns(b)
	stateFile := filepath.Join(b.TempDir(), "nft-state")
	newAgent := func(b *testing.B) (*Agent, *nft.Backend) {
		opts := []nft.Option{nft.WithNetNSFd(ns.FD())}
		if os.Getenv("BENCH_RESTART_NO_STATE") == "" {
			opts = append(opts, nft.WithStateFile(stateFile))
		}
		be, err := nft.New(opts...)
		if err != nil {
			b.Fatal(err)
		}
		a, err := New(Config{StateDir: filepath.Join(b.TempDir(), "state"), Logger: benchLogger()}, be)
		if err != nil {
			b.Fatal(err)
		}
		a.srv, a.hwLoaded = nullServer{}, true
		a.setTarget("web-01")
		return a, be
	}
	a, be := newAgent(b)
	if !a.receive(context.Background(), base, time.Now()) || a.failed {
		b.Fatalf("the first snapshot was not applied: %v", a.Status().LastError)
	}
	be.Close()
	rev := int64(1)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		rev++
		ds := base
		ds.Revision = rev
		// One grant of the kernel's is gone, one is new.
		ds.Grants = append(append([]wire.GrantEntry{}, base.Grants[1:]...), grant(n+i))
		answer, _ := json.Marshal(ds)
		decode := func(body []byte, ds *wire.DesiredState) error { return json.Unmarshal(body, ds) }
		if lines {
			answer, decode = linesOf(ds), func(body []byte, ds *wire.DesiredState) error {
				return wire.DecodeDesiredLines(bytes.NewReader(body), ds)
			}
		}
		base = ds
		a, be := newAgent(b)
		b.StartTimer()
		var got wire.DesiredState
		if err := decode(answer, &got); err != nil {
			b.Fatal(err)
		}
		if a.receive(context.Background(), got, time.Now()); a.failed || a.applied != rev {
			b.Fatalf("revision %d not applied: %v", rev, a.Status().LastError)
		}
		b.StopTimer()
		be.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/restart")
}
