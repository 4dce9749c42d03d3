package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// failAfter bounds how long a test waits for something that must happen
// (it is a failure bound, not a measurement).
const failAfter = 10 * time.Second

// serve runs the real server with cfg (a fresh data directory when DataDir
// is empty, 127.0.0.1:0 when Listen is) until the test ends, checking that it
// stops cleanly, and returns its address and admin token.
func serve(t *testing.T, cfg Config, logs io.Writer) (addr, token string) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if logs == nil {
		logs = io.Discard
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	ready := make(chan string, 1)
	cfg.Ready = func(a string) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server stopped with %v", err)
		}
	})
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("server stopped at start: %v", err)
	case <-time.After(failAfter):
		t.Fatal("server did not start")
	}
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, AdminTokenFile))
	if os.IsNotExist(err) && cfg.Database != "" {
		return addr, "" // a replica on a database another server set up
	}
	if err != nil {
		t.Fatal(err)
	}
	return addr, strings.TrimSpace(string(raw))
}

// enrollWeb01 creates target web-01 with admin and enrolls its agent at the
// server at addr; it returns the agent's credential.
func enrollWeb01(t *testing.T, admin *client.Client, addr string) string {
	t.Helper()
	ctx := context.Background()
	tc, err := admin.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.New("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	er, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return er.Credential
}

// rawConn dials addr and bounds every read and write by failAfter.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(failAfter))
	return c
}

// get sends GET path on c, with token as the bearer unless empty, and
// returns the status line, or the error that came instead.
func get(c net.Conn, br *bufio.Reader, path, token string) (string, error) {
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: jitgate\r\n"+auth+"\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status, nil
}

// heldConn is a raw keep-alive connection and its reader.
type heldConn struct {
	net.Conn
	br *bufio.Reader
}

func hold(t *testing.T, addr string) heldConn {
	t.Helper()
	c := rawConn(t, addr)
	return heldConn{c, bufio.NewReader(c)}
}

func (h heldConn) get(path, token string) (string, error) { return get(h.Conn, h.br, path, token) }

// closedByServer reports whether the server closed h: a request on it gets
// an error that is not a timeout (a timeout would mean it hangs).
func closedByServer(t *testing.T, h heldConn) bool {
	t.Helper()
	status, err := h.get("/healthz", "")
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a connection was neither answered nor closed: %v", err)
	}
	_ = status
	return err != nil
}

// TestSlowBodyIsCut: a request body trickled a byte at a time is cut when
// the body timeout passes, with a 408 that says why, and nothing is
// created; long-polls, which have no body, outlive that timeout.
func TestSlowBodyIsCut(t *testing.T) {
	const bodyTimeout = 300 * time.Millisecond
	addr, token := serve(t, Config{BodyTimeout: bodyTimeout, AgentPollWait: 2 * time.Second}, nil)

	c := rawConn(t, addr)
	fmt.Fprintf(c, "POST /api/v1/targets HTTP/1.1\r\nHost: jitgate\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{", token)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the attacker: one more byte every 50 ms, for ever
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received in the time allowed") {
		t.Fatalf("trickled body: %s %s, want 408 saying the body came too slowly", resp.Status, b)
	}

	ctx := context.Background()
	admin, err := client.New("http://"+addr, token)
	if err != nil {
		t.Fatal(err)
	}
	if ts, err := admin.Targets(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("targets after the cut request: %v, %v; want none", ts, err)
	}
	// A long-poll waits its full time (2 s, longer than the body timeout)
	// and answers; so does a request long-poll.
	agent, err := client.New("http://"+addr, enrollWeb01(t, admin, addr))
	if err != nil {
		t.Fatal(err)
	}
	first, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Desired(ctx, first.Revision, 2*time.Second); err != nil {
		t.Fatalf("an agent long-poll longer than the body timeout: %v", err)
	}
	// A report carrying its poll has a body: once read, its poll waits
	// its full time too.
	if _, answered, err := agent.ReportPoll(ctx, wire.AgentReport{Revision: first.Revision}, first.Revision, first.Revision, 2*time.Second); err != nil || !answered {
		t.Fatalf("a report carrying a long-poll longer than the body timeout: answered %v, %v", answered, err)
	}
}

// TestConnectionCapPerAddress: at the cap, a new connection from the same
// address is served and the oldest connection that never authenticated is
// closed instead; trusted proxies are exempt.
func TestConnectionCapPerAddress(t *testing.T) {
	addr, _ := serve(t, Config{MaxConnsPerAddress: 2}, nil)
	var held []heldConn
	for i := range 3 {
		h := hold(t, addr)
		if status, err := h.get("/healthz", ""); err != nil || status != "200 OK" {
			t.Fatalf("connection %d: %q, %v", i+1, status, err)
		}
		held = append(held, h)
	}
	if !closedByServer(t, held[0]) {
		t.Fatal("the oldest of three unauthenticated connections (cap 2) is still open")
	}
	for i, h := range held[1:] {
		if closedByServer(t, h) {
			t.Fatalf("connection %d of the newest two was closed", i+2)
		}
	}

	// A trusted proxy carries many clients' connections: not capped.
	proxied, _ := serve(t, Config{MaxConnsPerAddress: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, nil)
	var viaProxy []heldConn
	for i := range 3 {
		h := hold(t, proxied)
		if status, err := h.get("/healthz", ""); err != nil || status != "200 OK" {
			t.Fatalf("connection %d from a trusted proxy: %q, %v", i+1, status, err)
		}
		viaProxy = append(viaProxy, h)
	}
	for i, h := range viaProxy {
		if closedByServer(t, h) {
			t.Fatalf("connection %d from a trusted proxy was closed", i+1)
		}
	}
}

// TestConnectionCapIsNoLockout: an unprivileged process on the agent's host
// (the same address) holds every place of the per-address cap with idle
// keep-alive connections, and keeps opening more. The agent's credential
// still gets through on a new connection, an agent connection that
// authenticated earlier is never the one closed, and the squatter's own
// oldest connections are closed instead.
func TestConnectionCapIsNoLockout(t *testing.T) {
	const capN = 4
	addr, token := serve(t, Config{MaxConnsPerAddress: capN}, nil)
	admin, err := client.New("http://"+addr, token)
	if err != nil {
		t.Fatal(err)
	}
	credential := enrollWeb01(t, admin, addr)
	const desired = "/api/v1/agent/desired"

	// The agent's long-lived connection, authenticated before the attack.
	agentOld := hold(t, addr)
	if status, err := agentOld.get(desired, credential); err != nil || status != "200 OK" {
		t.Fatalf("the agent before the attack: %q, %v", status, err)
	}
	// The squatter fills the cap, then opens as many again.
	var squat []heldConn
	for range 2 * capN {
		h := hold(t, addr)
		if status, err := h.get("/healthz", ""); err != nil || status != "200 OK" {
			t.Fatalf("squatter connection: %q, %v", status, err)
		}
		squat = append(squat, h)
	}
	// The agent reconnects while the squatter holds the cap: served.
	agentNew := hold(t, addr)
	if status, err := agentNew.get(desired, credential); err != nil || status != "200 OK" {
		t.Fatalf("the agent's new connection while the cap is held: %q, %v; want 200", status, err)
	}
	// So is an admin (a bad token from the squatter changes nothing).
	bad := hold(t, addr)
	if status, err := bad.get("/api/v1/whoami", "jg_bogus"); err != nil || status != "401 Unauthorized" {
		t.Fatalf("a bogus token: %q, %v; want 401", status, err)
	}
	adminConn := hold(t, addr)
	if status, err := adminConn.get("/api/v1/whoami", token); err != nil || status != "200 OK" {
		t.Fatalf("the admin while the cap is held: %q, %v; want 200", status, err)
	}
	// The squatter keeps churning: authenticated connections stay open.
	for range 2 * capN {
		h := hold(t, addr)
		if _, err := h.get("/healthz", ""); err != nil {
			t.Fatal(err)
		}
		squat = append(squat, h)
	}
	for name, h := range map[string]heldConn{"old agent": agentOld, "new agent": agentNew, "admin": adminConn} {
		if closedByServer(t, h) {
			t.Errorf("the %s connection was closed by the squatter's connections", name)
		}
	}
	// The squatter holds at most the cap: its oldest connections are gone.
	open := 0
	for _, h := range squat {
		if !closedByServer(t, h) {
			open++
		}
	}
	if open > capN {
		t.Errorf("the squatter holds %d connections, cap %d", open, capN)
	}
}

// TestDiskFull fills a small real filesystem under the database: a write
// then fails with a 503 that names the cause, is logged and counted, and
// nothing of it is recorded; once space is free again, writes work.
func TestDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	data := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { // after the server stopped (cleanups run last to first)
		if out, err := exec.Command("umount", data).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v: %s", data, err, out)
		}
	})
	var logs lockedBuffer
	addr, token := serve(t, Config{DataDir: data}, &logs)
	ctx := context.Background()
	admin, err := client.New("http://"+addr, token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(data, "filler")
	fill(t, filler)
	_, err = admin.CreateTarget(ctx, wire.TargetCreate{Name: "web-02"})
	if client.StatusOf(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "database write failed: disk full") {
		t.Fatalf("creating a target on a full disk: %v, want 503 naming the full disk", err)
	}
	_, err = admin.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7",
		Duration: wire.Duration(time.Hour), Reason: "disk full test"})
	if client.StatusOf(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "database write failed: disk full") {
		t.Fatalf("an access request on a full disk: %v, want 503 naming the full disk", err)
	}
	// Nothing reported done was recorded.
	if ts, err := admin.Targets(ctx); err != nil || len(ts) != 1 {
		t.Fatalf("targets after the failed write: %+v, %v; want only web-01", ts, err)
	}
	if rs, err := admin.Requests(ctx, client.RequestFilter{}); err != nil || len(rs) != 0 {
		t.Fatalf("requests after the failed write: %+v, %v; want none", rs, err)
	}
	if !strings.Contains(logs.String(), "database write failed") || !strings.Contains(logs.String(), "cause=disk_full") {
		t.Errorf("no log line names the full disk:\n%s", logs.String())
	}
	metrics := scrape(t, addr, token)
	if !strings.Contains(metrics, `jitgate_store_write_errors_total{cause="disk_full"} `) ||
		strings.Contains(metrics, `jitgate_store_write_errors_total{cause="disk_full"} 0`) {
		t.Errorf("the disk_full write error is not counted:\n%s", grepLines(metrics, "jitgate_store_write_errors_total"))
	}

	// Space freed: writes work again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateTarget(ctx, wire.TargetCreate{Name: "web-02"}); err != nil {
		t.Fatalf("creating a target after space was freed: %v", err)
	}
}

// fill writes path until the filesystem holding it is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			return
		}
	}
}

func scrape(t *testing.T, addr, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// fakePruner deletes from counts of rows, at most limit per call.
type fakePruner struct {
	tokens, deliveries int64
	calls              int
	before             time.Time
}

func (f *fakePruner) PruneExpiredTokens(_ context.Context, _ time.Time, limit int) (int64, error) {
	f.calls++
	n := min(f.tokens, int64(limit))
	f.tokens -= n
	return n, nil
}

func (f *fakePruner) PruneOutbox(_ context.Context, before time.Time, limit int) (int64, error) {
	f.calls++
	f.before = before
	n := min(f.deliveries, int64(limit))
	f.deliveries -= n
	return n, nil
}

// TestPruneDrainsInBatches: one pruning pass repeats full batches until a
// short one, and keeps finished deliveries for deliveryRetention.
func TestPruneDrainsInBatches(t *testing.T) {
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	f := &fakePruner{tokens: 2*pruneBatch + 3, deliveries: pruneBatch}
	prune(context.Background(), f, now, slog.New(slog.DiscardHandler))
	if f.tokens != 0 || f.deliveries != 0 {
		t.Errorf("left %d tokens and %d deliveries, want none", f.tokens, f.deliveries)
	}
	if f.calls != 3+2 { // tokens: full, full, short; deliveries: full, empty
		t.Errorf("%d prune calls, want 5", f.calls)
	}
	if !f.before.Equal(now.Add(-deliveryRetention)) {
		t.Errorf("deliveries pruned before %v, want %v", f.before, now.Add(-deliveryRetention))
	}
}

// TestRefusalsFlushedAtShutdown: identical refusals still being counted when
// the server stops are written, as one event with their count, before the
// store closes (the first of them was written when it happened).
func TestRefusalsFlushedAtShutdown(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", DataDir: data, Logger: slog.New(slog.DiscardHandler), Ready: func(a string) { ready <- a }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("server stopped at start: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(data, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := client.New("http://"+addr, strings.TrimSpace(string(raw)))
	const n = 5
	for range n {
		if _, err := admin.Revoke(context.Background(), "r-nosuchrequest", ""); client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("revoking a request that does not exist: %v, want 404", err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(data, "jitgate.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	es, err := st.ListAudit(context.Background(), store.AuditFilter{Action: string(audit.AccessDenied)})
	// The first refusal at once, the repeats counted until shutdown.
	if err != nil || len(es) != 2 || es[0].Details["count"] != float64(1) || es[1].Details["count"] != float64(n-1) {
		t.Fatalf("access.denied events after shutdown: %+v, %v; want the first, then one with count %d", es, err, n-1)
	}
}

// TestConnContextSeesThroughTLS: behind TLS (the limiter wraps the TCP
// listener, TLS wraps the limiter) a request that authenticated still
// reaches its counted TCP connection, which stops counting.
func TestConnContextSeesThroughTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newConnLimiter(ln, 1, nil, slog.New(slog.DiscardHandler))
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := connContext(context.Background(), tls.Server(c, &tls.Config{}))
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	key, _ := connKey(c.RemoteAddr())
	if n := len(l.open[key]); n != 1 {
		t.Fatalf("%d counted connections before authentication, want 1", n)
	}
	httpedge.Authenticated(req)
	if n := len(l.open[key]); n != 0 {
		t.Fatalf("%d counted connections after a request on it authenticated through TLS, want 0", n)
	}
}

// TestAuthenticatedConnectionsBounded: authenticated connections stop
// counting only up to their own bound (16 times the cap) per address; a
// connection authenticating beyond it keeps counting and is the first to
// go at the cap, while the ones within the bound stay open.
func TestAuthenticatedConnectionsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newConnLimiter(ln, 2, nil, slog.New(slog.DiscardHandler))
	type pair struct{ client, server net.Conn }
	open := func() pair {
		t.Helper()
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		return pair{cl, sc}
	}
	var ps []pair
	for range l.authMax + 2 {
		p := open()
		p.server.(*countedConn).authenticated()
		ps = append(ps, p)
	}
	key, _ := connKey(ps[0].server.RemoteAddr())
	if got := l.authed[key]; got != l.authMax {
		t.Fatalf("%d connections stopped counting, want the bound %d", got, l.authMax)
	}
	if got := len(l.open[key]); got != 2 {
		t.Fatalf("%d connections still counted, want the 2 beyond the bound", got)
	}
	open() // at the cap: the oldest still counted goes
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(failAfter))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a connection was neither closed nor written to")
		}
		return err != nil
	}
	if !closed(ps[l.authMax].client) {
		t.Error("the first connection beyond the bound was not closed at the cap")
	}
	// A connection within the bound is open: nothing to read yet.
	ps[0].client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := ps[0].client.Read(make([]byte, 1)); err == nil || !err.(net.Error).Timeout() {
		t.Errorf("an authenticated connection within the bound: %v, want it open", err)
	}
}
