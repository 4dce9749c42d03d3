package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/firewalltest"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

var (
	bgServerKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	bgOtherKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize))
	bgSource    = netip.MustParseAddr("198.51.100.7")
	bgNeighbour = netip.MustParseAddr("198.51.100.8")
)

func bgPub() string {
	return base64.StdEncoding.EncodeToString(bgServerKey.Public().(ed25519.PublicKey))
}

// bgToken signs a token for web-1, 22/tcp, at most 30 minutes, valid for a
// day from now, after edit.
func bgToken(t *testing.T, key ed25519.PrivateKey, now time.Time, edit func(*access.Token)) string {
	t.Helper()
	tok := access.Token{ID: "bgt-test1", Targets: []string{"web-1"}, Ports: []string{"22/tcp"}, MaxDuration: 30 * time.Minute,
		IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(24 * time.Hour), IssuedBy: "alice"}
	if edit != nil {
		edit(&tok)
	}
	s, err := tok.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bgStateDir is an enrolled agent's state directory that learned the
// server's key (and revocations) while connected.
func bgStateDir(t *testing.T, revoked ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := saveCredential(filepath.Join(dir, credentialName), credential{ServerURL: "https://jit.example.com", Target: "web-1", Credential: "c"}); err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{StateDir: dir}, log: testLogger(&syncBuffer{})}
	a.learnBreakGlass(wire.DesiredState{BreakGlassKey: bgPub(), BreakGlassRevoked: revoked})
	return dir
}

// gated is a fake gate protecting 22/tcp, holding no grant.
func gated(t *testing.T, now time.Time) *firewalltest.Fake {
	t.Helper()
	f := firewalltest.NewFake()
	if _, err := f.Apply(context.Background(), firewall.Ruleset{Protected: []firewall.PortKey{{Proto: firewall.TCP, Port: 22}}}, now); err != nil {
		t.Fatal(err)
	}
	return f
}

func allows(t *testing.T, b firewall.Backend, src netip.Addr, now time.Time) bool {
	t.Helper()
	st, err := b.State(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	return st.Allows(src, firewall.TCP, 22, now)
}

// alterBody returns tok with its body's maximum duration raised and the
// original signature kept.
func alterBody(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(tok, "jgbg1."), ".")
	body, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || !bytes.Contains(body, []byte(`"max_duration_ns":1800000000000`)) {
		t.Fatalf("token body %s: %v", body, err)
	}
	body = bytes.Replace(body, []byte(`"max_duration_ns":1800000000000`), []byte(`"max_duration_ns":9800000000000`), 1)
	return "jgbg1." + base64.RawURLEncoding.EncodeToString(body) + "." + parts[1]
}

// TestOfflineBreakGlassRefusals: every hostile or wrong token is refused in
// one line wrapping access.ErrBreakGlass, and nothing is recorded or opened.
func TestOfflineBreakGlassRefusals(t *testing.T) {
	now := time.Now()
	valid := bgToken(t, bgServerKey, now, nil)
	for _, tc := range []struct {
		name    string
		token   string
		edit    func(*OfflineRequest)
		revoked []string
		says    string
	}{
		{"forged signature", valid[:len(valid)-4] + "AAAA", nil, nil, "does not verify"},
		{"signed by another key", bgToken(t, bgOtherKey, now, nil), nil, nil, "does not verify"},
		{"altered body", alterBody(t, valid), nil, nil, "does not verify"},
		{"another target", bgToken(t, bgServerKey, now, func(k *access.Token) { k.Targets = []string{"db-1"} }), nil, nil, "not this target"},
		{"another port", valid, func(r *OfflineRequest) { r.Port = "3389/tcp" }, nil, "covers 22/tcp, not 3389/tcp"},
		{"expired", bgToken(t, bgServerKey, now, func(k *access.Token) { k.IssuedAt, k.ExpiresAt = now.Add(-48*time.Hour), now.Add(-time.Minute) }), nil, nil, "expired"},
		{"duration too long", valid, func(r *OfflineRequest) { r.Duration = 31 * time.Minute }, nil, "exceeds the token's maximum"},
		{"revoked", valid, nil, []string{"bgt-test1"}, "revoked"},
		{"malformed", "jgbg1.!!!", nil, nil, "malformed"},
		{"not a token", "hello", nil, nil, "malformed"},
		{"huge", "jgbg1." + strings.Repeat("A", 5000), nil, nil, "malformed"},
		{"bad source", valid, func(r *OfflineRequest) { r.Source = "everyone" }, nil, "not an address"},
		{"a network", valid, func(r *OfflineRequest) { r.Source = "0.0.0.0/0" }, nil, "opens one address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := bgStateDir(t, tc.revoked...)
			b := gated(t, now)
			batches := b.Batches()
			req := OfflineRequest{StateDir: dir, Token: tc.token, Source: bgSource.String(), Duration: 10 * time.Minute}
			if tc.edit != nil {
				tc.edit(&req)
			}
			_, err := OfflineBreakGlass(context.Background(), req, b, now)
			if !errors.Is(err, access.ErrBreakGlass) || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v; want one line refusing with %q", err, tc.says)
			}
			if b.Batches() != batches || allows(t, b, bgSource, now) {
				t.Error("the firewall changed on a refusal")
			}
			if fi, err := os.Stat(filepath.Join(dir, bgLogName)); err == nil && fi.Size() != 0 {
				t.Errorf("a refusal was recorded (%d bytes of log)", fi.Size())
			}
		})
	}
	t.Run("no key learned", func(t *testing.T) {
		dir := bgStateDir(t)
		os.Remove(filepath.Join(dir, bgKeyName))
		_, err := OfflineBreakGlass(context.Background(), OfflineRequest{StateDir: dir, Token: valid, Source: "198.51.100.7", Duration: time.Minute}, gated(t, now), now)
		if !errors.Is(err, access.ErrBreakGlass) || !strings.Contains(err.Error(), "no server public key") {
			t.Fatalf("got %v", err)
		}
	})
}

// bgServer is a memServer that also takes break-glass reports.
type bgServer struct {
	*memServer
	mu   sync.Mutex
	uses []wire.BreakGlassUse
}

func (s *bgServer) ReportBreakGlassUse(ctx context.Context, u wire.BreakGlassUse) (wire.BreakGlassAlert, error) {
	s.memServer.mu.Lock()
	down := s.memServer.down
	s.memServer.mu.Unlock()
	if down {
		return wire.BreakGlassAlert{}, errUnreachable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uses = append(s.uses, u)
	return wire.BreakGlassAlert{ID: "bga-1"}, nil
}

func (s *bgServer) reported() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.uses)
}

func (s *bgServer) publish(ds wire.DesiredState) {
	s.memServer.mu.Lock()
	defer s.memServer.mu.Unlock()
	s.memServer.ds = ds
	close(s.memServer.changed)
	s.memServer.changed = make(chan struct{})
}

// TestBreakGlassSurvivesReconcile: with the server unreachable, an offline
// token opens 22/tcp for its source only; the running agent's resyncs and,
// once the server is back, its full apply of a desired state that knows
// nothing of it keep the element (valid break-glass uses are part of what
// the agent applies); the use is reported once; a second use is refused;
// the token's revocation, sent with a desired state, closes it.
func TestBreakGlassSurvivesReconcile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := bgStateDir(t)
		backend := gated(t, time.Now())
		ds := protectedSSH(1)
		ds.BreakGlassKey = bgPub()
		srv := &bgServer{memServer: newMemServer(ds)}
		a, err := New(Config{StateDir: dir, Logger: testLogger(&syncBuffer{}), PollWait: 20 * time.Second}, backend)
		if err != nil {
			t.Fatal(err)
		}
		a.srv = srv
		a.setTarget("web-1")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		time.Sleep(time.Second)
		synctest.Wait()
		if a.Status().AppliedRevision != 1 {
			t.Fatalf("agent did not apply revision 1: %+v", a.Status())
		}

		srv.setDown(true)
		time.Sleep(time.Second)
		tok := bgToken(t, bgServerKey, time.Now(), nil)
		res, err := OfflineBreakGlass(ctx, OfflineRequest{StateDir: dir, Token: tok, Source: bgSource.String(), Duration: 10 * time.Minute, Operator: "root"}, backend, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !allows(t, backend, bgSource, time.Now()) || allows(t, backend, bgNeighbour, time.Now()) {
			t.Fatal("the token did not open 22/tcp for its source only")
		}
		// Two resyncs while the server is down: still open.
		time.Sleep(2*DefaultResyncEvery + time.Second)
		synctest.Wait()
		if !allows(t, backend, bgSource, time.Now()) {
			t.Fatal("a resync removed the break-glass element")
		}
		if _, err := OfflineBreakGlass(ctx, OfflineRequest{StateDir: dir, Token: tok, Source: bgSource.String(), Duration: time.Minute}, backend, time.Now()); !errors.Is(err, access.ErrBreakGlass) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("second use: %v, want refused as already used", err)
		}

		// The server returns with a new revision that knows nothing of it.
		srv.setDown(false)
		next := protectedSSH(2)
		// As the server sends it: an empty, non-nil list of grants (applied
		// as received, not gathered from held).
		next.BreakGlassKey, next.Grants = bgPub(), []wire.GrantEntry{}
		srv.publish(next)
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if a.Status().AppliedRevision != 2 {
			t.Fatalf("revision 2 not applied: %+v", a.Status())
		}
		if !allows(t, backend, bgSource, time.Now()) {
			t.Fatal("the full apply of the server's state removed a valid break-glass element")
		}
		if n := srv.reported(); n != 1 {
			t.Fatalf("%d reports of the use, want 1", n)
		}
		if u := srv.uses[0]; u.Token != tok || u.Source != bgSource.String()+"/32" || u.Port != 22 || u.Operator != "root" {
			t.Errorf("report %+v", u)
		}

		// Revoked while live: the next state closes it, and it is not reported again.
		rev := protectedSSH(3)
		rev.BreakGlassKey, rev.BreakGlassRevoked = bgPub(), []string{res.TokenID}
		srv.publish(rev)
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if allows(t, backend, bgSource, time.Now()) {
			t.Fatal("a revoked token's opening stayed open")
		}
		if n := srv.reported(); n != 1 {
			t.Errorf("%d reports, want still 1", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestRangePrefixes: the kernel's ranges come back as the prefixes that
// cover them exactly.
func TestRangePrefixes(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"198.51.100.7", "198.51.100.7", "198.51.100.7/32"},
		{"198.51.100.0", "198.51.100.255", "198.51.100.0/24"},
		{"198.51.100.1", "198.51.100.6", "198.51.100.1/32 198.51.100.2/31 198.51.100.4/31 198.51.100.6/32"},
		{"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"2001:db8::", "2001:db8::ffff", "2001:db8::/112"},
	} {
		var got []string
		for _, p := range rangePrefixes(netip.MustParseAddr(tc.from), netip.MustParseAddr(tc.to)) {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s-%s: %v, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}

// TestBreakGlassLogDamage: a log a crash tore, or one damaged in the middle,
// must not let a token be used twice. A crash in the middle of an append
// leaves a line without its newline; the next use appended after it was
// glued to that fragment, unreadable, so the token it spent could be used
// again (and no apply kept its opening). A line the agent cannot read in
// the middle of the log may be a use: the command refuses rather than
// guess (fail closed), and says which line.
func TestBreakGlassLogDamage(t *testing.T) {
	now := time.Now()
	tok := bgToken(t, bgServerKey, now, nil)
	use := func(dir string) error {
		_, err := OfflineBreakGlass(context.Background(), OfflineRequest{StateDir: dir, Token: tok, Source: bgSource.String(), Duration: 10 * time.Minute}, gated(t, now), now)
		return err
	}
	t.Run("torn last line", func(t *testing.T) {
		dir := bgStateDir(t)
		torn := `{"kind":"use","token_id":"bgt-other","token":"jgbg1.eyJpZCI6`
		if err := os.WriteFile(filepath.Join(dir, bgLogName), []byte(torn), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := use(dir); err != nil {
			t.Fatalf("first use after a torn line: %v", err)
		}
		if err := use(dir); !errors.Is(err, access.ErrBreakGlass) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("second use after a torn line: got %v, want refused as already used", err)
		}
		l, err := openBGLog(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		recs, err := l.records()
		if err != nil || len(liveUses(recs, bgServerKey.Public().(ed25519.PublicKey), nil, "web-1", now)) != 1 {
			t.Fatalf("the use after a torn line is not live in the log (%v): an apply would close it", err)
		}
	})
	for _, tc := range []struct{ name, log string }{
		{"garbage line", "\x00\x00\x00garbage\n"},
		{"overlong line", strings.Repeat("x", 100<<10) + "\n"},
		{"a use without its id", `{"kind":"use","token":"jgbg1.x"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := bgStateDir(t)
			if err := os.WriteFile(filepath.Join(dir, bgLogName), []byte(tc.log+`{"kind":"reported","token_id":"bgt-zzz"}`+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := use(dir)
			if !errors.Is(err, access.ErrBreakGlass) || !strings.Contains(err.Error(), "damaged") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("use with a damaged log: got %v, want one line refusing (damaged)", err)
			}
		})
	}
}

// TestBreakGlassUseNotExtendedByTheClock: a use is kept by the reconcile
// rule until its time plus its duration, on the host's clock. When that
// clock steps back after the use (NTP correcting a clock that ran ahead
// during the outage, or someone setting it), the use's deadline moved into
// the future again: every full apply re-added the element with a fresh
// kernel timeout, long after the kernel had ended it, past the token's
// maximum. A use recorded after now (the clock went back: how long it has
// been open is unknown) is no longer kept, nor one recorded at or after
// its token's expiry (which no honest use is).
func TestBreakGlassUseNotExtendedByTheClock(t *testing.T) {
	now := time.Now()
	key := bgServerKey.Public().(ed25519.PublicKey)
	tok := bgToken(t, bgServerKey, now, nil)
	rec := func(usedAt time.Time) bgRecord {
		return bgRecord{Kind: "use", TokenID: "bgt-test1", Token: tok, Target: "web-1", Source: "198.51.100.7/32", Protocol: "tcp", Port: 22,
			Duration: 30 * time.Minute, UsedAt: usedAt}
	}
	for _, tc := range []struct {
		name string
		used time.Time
		live bool
	}{
		{"used ten minutes ago", now.Add(-10 * time.Minute), true},
		{"ended", now.Add(-31 * time.Minute), false},
		{"clock stepped back an hour after the use", now.Add(time.Hour), false},
		{"used after the token expired", now.Add(25 * time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := liveUses([]bgRecord{rec(tc.used)}, key, nil, "web-1", now)
			if (len(got) == 1) != tc.live {
				t.Fatalf("live uses %+v, want live=%v", got, tc.live)
			}
			if tc.live && got[0].entry.ExpiresAt.Sub(now) > 30*time.Minute {
				t.Errorf("kept until %s, beyond the use's duration", got[0].entry.ExpiresAt)
			}
		})
	}
}

// TestOfflineBreakGlassMappedSource: --source given as an IPv4-mapped IPv6
// address or prefix (::ffff:198.51.100.7, as some tools print a peer)
// opens the IPv4 address it names; kept as IPv6 it spent the token and
// opened nothing that IPv4 packets match.
func TestOfflineBreakGlassMappedSource(t *testing.T) {
	now := time.Now()
	for _, src := range []string{"::ffff:198.51.100.7", "::ffff:198.51.100.7/128"} {
		t.Run(src, func(t *testing.T) {
			dir := bgStateDir(t)
			b := gated(t, now)
			res, err := OfflineBreakGlass(context.Background(), OfflineRequest{StateDir: dir, Token: bgToken(t, bgServerKey, now, nil), Source: src, Duration: 10 * time.Minute}, b, now)
			if err != nil {
				t.Fatal(err)
			}
			if res.Source != "198.51.100.7/32" || !allows(t, b, bgSource, now) {
				t.Errorf("opened for %s; want 198.51.100.7/32 allowed", res.Source)
			}
		})
	}
}

// TestOfflineBreakGlassRacingUses: two uses of one token at once on one
// host (two operators, or one running the command twice) serialize on the
// log's flock: exactly one opens, the other is refused as already used.
func TestOfflineBreakGlassRacingUses(t *testing.T) {
	now := time.Now()
	dir := bgStateDir(t)
	tok := bgToken(t, bgServerKey, now, nil)
	b := gated(t, now)
	const n = 8
	errs := make(chan error, n)
	var start sync.WaitGroup
	start.Add(1)
	for range n {
		go func() {
			start.Wait()
			_, err := OfflineBreakGlass(context.Background(), OfflineRequest{StateDir: dir, Token: tok, Source: bgSource.String(), Duration: 10 * time.Minute}, b, now)
			errs <- err
		}()
	}
	start.Done()
	ok := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, access.ErrBreakGlass) || !strings.Contains(err.Error(), "already used"):
			t.Errorf("racing use: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d racing uses of one token opened, want 1", ok, n)
	}
}

// TestBreakGlassRevokedByADelta: a revocation of a live offline opening
// that reaches the agent in a delta answer (not a snapshot) closes it at
// once, real nftables. The server marks a revocation as needing a
// snapshot today; an answer that carries it as a delta (another server
// version, a replica) applied only the delta's grants through the Index,
// which holds the opening: it stayed open until the next full apply (the
// periodic resync, up to a minute).
func TestBreakGlassRevokedByADelta(t *testing.T) {
	testenv.RequireKernel(t)
	ctx := context.Background()
	dir := bgStateDir(t)
	ns := testenv.NewNetns(t)
	be, err := nft.New(nft.WithNetNSFd(ns.FD()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	a, err := New(Config{StateDir: dir, Logger: testLogger(&syncBuffer{})}, be)
	if err != nil {
		t.Fatal(err)
	}
	a.srv, a.hwLoaded = nullServer{}, true
	a.setTarget("web-1")
	snap := protectedSSH(1, wire.GrantEntry{ID: 1, Source: "203.0.113.1", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)})
	snap.BreakGlassKey, snap.ServerTime = bgPub(), time.Now()
	if a.receive(ctx, snap, time.Now()); a.failed {
		t.Fatalf("snapshot: %v", a.Status().LastError)
	}
	tok := bgToken(t, bgServerKey, time.Now(), nil)
	res, err := OfflineBreakGlass(ctx, OfflineRequest{StateDir: dir, Token: tok, Source: bgSource.String(), Duration: 10 * time.Minute, Operator: "root"}, be, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	snap.Revision = 2
	if a.receive(ctx, snap, time.Now()); a.failed || a.bgApplied != 1 || a.index == nil {
		t.Fatalf("snapshot 2: %v, %d openings applied", a.Status().LastError, a.bgApplied)
	}
	if !allows(t, be, bgSource, time.Now()) {
		t.Fatal("the offline opening is not in the gate")
	}
	delta := wire.DesiredState{Target: "web-1", Revision: 3, Since: 2, ServerTime: time.Now(), BreakGlassKey: bgPub(), BreakGlassRevoked: []string{res.TokenID}}
	a.learnBreakGlass(delta)
	if a.receive(ctx, delta, time.Now()); a.failed || a.applied != 3 {
		t.Fatalf("delta: %v", a.Status().LastError)
	}
	if allows(t, be, bgSource, time.Now()) {
		t.Error("a break-glass token revoked in a delta answer left its opening open")
	}
	if !allows(t, be, netip.MustParseAddr("203.0.113.1"), time.Now()) {
		t.Error("the grant of the snapshot is gone")
	}
}
