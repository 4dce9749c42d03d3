package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestDeltasAgainstServerTruth drives the real server and an agent on real
// nftables through random requests and revocations of overlapping sources
// (hosts, a host inside a /30 and a /29, /31 and /32, IPv4-mapped IPv6,
// IPv6 hosts and a /126, the same source on two ports, several requests of
// one source), applied as deltas, and checks after each step that every
// address of the small universe is open on each port exactly when a grant
// the server holds active covers it: nothing open that the server does not
// grant, nothing revoked still open. The seed is logged.
func TestDeltasAgainstServerTruth(t *testing.T) {
	testenv.RequireKernel(t)
	ctx := context.Background()
	c, url, enroll := realServer(t)
	allowed := []string{"198.51.100.0/24", "2001:db8::/64"}
	if _, err := c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(8 * time.Hour), AllowedSources: allowed}, {Port: 443, MaxDuration: wire.Duration(8 * time.Hour), AllowedSources: allowed}}}); err != nil {
		t.Fatal(err)
	}
	ns := testenv.NewNetns(t)
	state := filepath.Join(t.TempDir(), "state")
	be, err := nft.New(nft.WithNetNSFd(ns.FD()), nft.WithStateFile(filepath.Join(t.TempDir(), "nft-state")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	var logs syncBuffer
	start(t, Config{ServerURL: url, EnrollToken: enroll, StateDir: state, PollWait: 5 * time.Second, Version: "test", Logger: testLogger(&logs)}, be)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	sources := []string{"198.51.100.1", "198.51.100.2", "198.51.100.0/30", "198.51.100.0/29", "198.51.100.4/31", "198.51.100.5/32",
		"::ffff:198.51.100.6", "::ffff:198.51.100.0/126", "2001:db8::1", "2001:db8::/126", "2001:db8::2/128"}
	var universe []netip.Addr
	for i := range 9 {
		universe = append(universe, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
	}
	ports := []uint16{22, 443}
	var ids []string
	// What the server grants: a snapshot asked with the agent's own
	// credential (the request records say what was asked; a later request
	// of the same source and port takes the grant over).
	var srv *client.Client
	wantState := func(now time.Time) (firewall.State, error) {
		if srv == nil {
			cred, err := loadCredential(filepath.Join(state, "credential"))
			if err != nil {
				return firewall.State{}, err
			}
			if srv, err = client.New(url, cred.Credential); err != nil {
				return firewall.State{}, err
			}
		}
		ds, err := srv.DesiredSince(ctx, 0, 0, 0)
		if err != nil {
			return firewall.State{}, err
		}
		rs, err := toRuleset(ds, 0, firewall.HostMode)
		if err != nil {
			return firewall.State{}, err
		}
		return firewall.State{Protected: rs.Protected, Elements: rs.Elements(now)}, nil
	}
	eventually(t, "enrolled", func() bool { _, err := loadCredential(filepath.Join(state, "credential")); return err == nil })
	var history []string
	for step := range 40 {
		what := ""
		if len(ids) > 0 && r.IntN(3) == 0 {
			id := ids[r.IntN(len(ids))]
			_, err := c.Revoke(ctx, id, "done")
			what = fmt.Sprintf("revoke %s (%v)", id, err)
		} else {
			src := sources[r.IntN(len(sources))]
			var ps []string
			for _, p := range ports {
				if r.IntN(2) == 0 {
					ps = append(ps, fmt.Sprint(p))
				}
			}
			if len(ps) == 0 {
				ps = []string{"22"}
			}
			q, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: ps, Source: src, Duration: wire.Duration(time.Duration(1+r.IntN(120)) * time.Minute), Reason: "x"})
			if err != nil {
				t.Fatalf("step %d: request %s %v: %v", step, src, ps, err)
			}
			ids = append(ids, q.ID)
			what = fmt.Sprintf("request %s %s %v", q.ID, src, ps)
		}
		history = append(history, what)
		var diff []string
		ok := func() bool {
			now := time.Now()
			want, err := wantState(now)
			if err != nil {
				t.Fatal(err)
			}
			st, err := be.State(ctx, now)
			if err != nil {
				return false
			}
			diff = diff[:0]
			for _, a := range universe {
				for _, port := range ports {
					if got, w := st.Allows(a, firewall.TCP, port, now), want.Allows(a, firewall.TCP, port, now.Add(time.Second)); got != w {
						diff = append(diff, fmt.Sprintf("%s %d/tcp: open %v, want %v", a, port, got, w))
					}
				}
			}
			return len(diff) == 0
		}
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				var active []string
				for _, id := range ids {
					if q, err := c.Request(ctx, id); err == nil && q.State == "active" {
						active = append(active, fmt.Sprintf("%s %s %v until %s", q.ID, q.Source, q.Ports, q.ExpiresAt.Format(time.TimeOnly)))
					}
				}
				st, _ := be.State(ctx, time.Now())
				t.Fatalf("step %d (%s): the kernel is not what the server grants:\n%v\nactive: %v\nkernel: %v\nhistory: %q\n%s", step, what, diff, active, st.Elements, history, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
