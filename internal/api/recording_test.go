package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/webterm"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRawTunnelToRecordedPortRefused: on a port whose rule records, a live
// bastion grant does not open a raw tunnel (the server could not see into
// it): 403 naming the rule and the way that works, no session, and the
// refusal audited. The same grant on an unrecorded port opens one.
func TestRawTunnelToRecordedPortRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := testenv.Echo(t)
	agent := bastionTarget(t, e, port, func(r *wire.PortRule) { r.Record = true })
	relayAgent(t, e, agent)
	grantBastion(t, e.c, port)
	applyDesired(t, agent)

	_, err := dialTunnel(e.c, port)
	if client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "recorded") || !strings.Contains(err.Error(), "jitgate ssh") {
		t.Fatalf("raw tunnel to a recorded port: %v, want 403 saying it is recorded and to use jitgate ssh", err)
	}
	if xs, err := e.st.ListSessions(ctx, store.SessionFilter{}); err != nil || len(xs) != 0 {
		t.Errorf("sessions after the refusal: %v, %v; want none", xs, err)
	}
	events, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.AccessDenied), Target: "web-01"})
	if err != nil || len(events) != 1 || !strings.Contains(events[0].Reason+" "+stringDetail(events[0], "error"), "recorded") {
		t.Errorf("access.denied events %+v (%v), want one saying the port is recorded", events, err)
	}

	// Recording off: the same grant opens a raw tunnel.
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(3600e9), Access: "bastion"}}})
	conn := openTunnel(t, e.c, port)
	conn.Close()
}

// TestRecordingTurnedOnEndsRawTunnel: a raw tunnel opened while its port
// was not recorded ends (revoked, saying why) as soon as the port's rule
// says record: the server cannot see into it, so it may not go on.
func TestRecordingTurnedOnEndsRawTunnel(t *testing.T) {
	e := newEnv(t)
	port := testenv.Echo(t)
	agent := bastionTarget(t, e, port, nil)
	relayAgent(t, e, agent)
	grantBastion(t, e.c, port)
	applyDesired(t, agent)
	conn := openTunnel(t, e.c, port)
	defer conn.Close()
	live := sessionByID(t, e.c, "")

	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(3600e9), Access: "bastion", Record: true}}})
	waitClosed(t, conn, "a raw tunnel after its port became recorded")
	for sessionByID(t, e.c, live.ID).State != "ended" {
		time.Sleep(10 * time.Millisecond)
	}
	if got := sessionByID(t, e.c, live.ID); got.EndReason != "revoked" || !strings.Contains(got.Message, "recorded") {
		t.Errorf("session = %+v, want ended revoked, saying it must be recorded", got)
	}
}

func newRecordingsDir(tb testing.TB) *recording.Dir {
	tb.Helper()
	d, err := recording.OpenDir(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// saveRecording writes and saves a recording of session id holding text,
// as the server's recorder does, and returns its SHA-256.
func saveRecording(tb testing.TB, e *env, x session.Session, text string) string {
	d := e.recordings
	tb.Helper()
	ctx := context.Background()
	if err := e.st.StartRecording(ctx, store.Recording{SessionID: x.ID, Target: x.Target, Principal: x.Principal, RequestID: x.RequestID, StartedAt: x.StartedAt}); err != nil {
		tb.Fatal(err)
	}
	rec, err := d.Create(x.ID, recording.Header{Width: 80, Height: 24}, x.StartedAt, false)
	if err != nil {
		tb.Fatal(err)
	}
	rec.Output(x.StartedAt.Add(time.Second), []byte(text))
	sha, size, err := rec.Close(x.StartedAt.Add(2 * time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.st.SaveRecording(ctx, x.ID, sha, size, false, time.Now()); err != nil {
		tb.Fatal(err)
	}
	return sha
}

func stringDetail(e audit.Event, key string) string {
	s, _ := e.Details[key].(string)
	return s
}

// TestRecordingAccess: a session's recording is served to its own
// principal and to those who read others' requests on its target, checked
// against its saved SHA-256 (an altered file is refused), not to another
// requester; a deleted one is gone (410), an unrecorded session has none
// (404). The session list says which sessions are recorded, and searches
// by id, user and target.
func TestRecordingAccess(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	bob := f.user(t, "bob", authz.Requester, "label:group=prod")
	carol := f.user(t, "carol", authz.Requester, "label:group=prod")
	dave := f.user(t, "dave", authz.Auditor, "label:group=prod")
	start := time.Now() // after web-01 was created: a session is judged by its target as it was then (targetAt)
	x := session.Session{ID: store.NewSessionID(), Target: "web-01", Principal: "bob", RequestID: f.granted, Protocol: "tcp", Port: 22,
		StartedAt: start, Deadline: start.Add(time.Hour), State: session.Live}
	if err := f.st.StartSession(ctx, x); err != nil {
		t.Fatal(err)
	}
	sha := saveRecording(t, f.env, x, "marker-42\r\n")

	for _, tt := range []struct {
		who, token string
		want       int
	}{{"bob (own)", bob, 200}, {"carol (another requester)", carol, 403}, {"dave (auditor)", dave, 200}, {"admin", f.admin, 200}} {
		var buf strings.Builder
		got, err := f.c.WithToken(tt.token).Recording(ctx, x.ID, &buf)
		if status := client.StatusOf(err); err == nil && tt.want != 200 || err != nil && status != tt.want {
			t.Errorf("%s: %v, want %d", tt.who, err, tt.want)
			continue
		}
		if tt.want == 200 && (got != sha || !strings.Contains(buf.String(), "marker-42")) {
			t.Errorf("%s: sha %s and %q; want %s and the marker", tt.who, got, buf.String(), sha)
		}
	}

	// The list shows the recording, and searches.
	for _, tt := range []struct {
		q    client.SessionQuery
		want int
	}{
		{client.SessionQuery{ID: x.ID}, 1},
		{client.SessionQuery{Principal: "bob"}, 1},
		{client.SessionQuery{Principal: "bob", Target: "web-01"}, 1},
		{client.SessionQuery{Target: "web-01"}, 2}, // bob's and the fixture's (alice's)
		{client.SessionQuery{Target: "db-01"}, 0},
		{client.SessionQuery{Principal: "nobody"}, 0},
	} {
		xs, err := f.c.SearchSessions(ctx, tt.q)
		if err != nil || len(xs) != tt.want {
			t.Errorf("SearchSessions(%+v) = %d sessions, %v; want %d", tt.q, len(xs), err, tt.want)
		}
	}
	xs, err := f.c.SearchSessions(ctx, client.SessionQuery{ID: x.ID})
	if err != nil || len(xs) != 1 || xs[0].Recording == nil || xs[0].Recording.SHA256 != sha || xs[0].Recording.State != "saved" {
		t.Errorf("listed session %+v, %v; want its saved recording with sha %s", xs, err, sha)
	}

	// Altered on disk: refused, not served.
	fh, err := os.OpenFile(filepath.Join(f.recordings.Path(), x.ID+".cast"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString("[9.0, \"o\", \"forged\"]\n")
	fh.Close()
	if _, err := f.c.Recording(ctx, x.ID, io.Discard); client.StatusOf(err) != http.StatusInternalServerError || !strings.Contains(err.Error(), "altered") {
		t.Errorf("altered recording: %v, want 500 saying it was altered", err)
	}
	// Deleted by retention: 410.
	if err := f.st.DeleteRecording(ctx, x.ID, audit.System, "retention", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Recording(ctx, x.ID, io.Discard); client.StatusOf(err) != http.StatusGone {
		t.Errorf("deleted recording: %v, want 410", err)
	}
	// A session that was not recorded, and one that does not exist.
	y := x
	y.ID = store.NewSessionID()
	if err := f.st.StartSession(ctx, y); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{y.ID, "s-none"} {
		if _, err := f.c.Recording(ctx, id, io.Discard); client.StatusOf(err) != http.StatusNotFound {
			t.Errorf("recording of %s: %v, want 404", id, err)
		}
	}
}

// TestRecordedTerminal drives a browser terminal on a recorded port
// (record_input too) while an auditor watches: the watcher sees the
// output live, the person is told who watches, the watch is audited; at
// the end the recording is a valid asciicast holding the output and the
// keystrokes, and its SHA-256 and size are those of session.recorded.
func TestRecordedTerminal(t *testing.T) {
	te := newTermEnv(t, nil)
	ctx := context.Background()
	te.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: te.port, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour),
		Access: "bastion", Logins: []string{"ubuntu"}, Record: true, RecordInput: true}}})
	if _, err := te.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:dave", Role: authz.Auditor, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	dave, _, err := te.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "dave", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	tc := dialTerm(t, te, "ubuntu", webterm.Start{Auth: webterm.AuthCertificate, Cols: 100, Rows: 30})
	var x wire.BastionSession
	waitFor(t, "the terminal to be listed as watchable", func() bool {
		xs, err := te.c.SearchSessions(ctx, client.SessionQuery{Active: true, Principal: "alice2"})
		if err == nil && len(xs) == 1 && xs[0].Watchable {
			x = xs[0]
			return true
		}
		return false
	})
	if x.Recording == nil || x.Recording.State != "recording" || !x.Recording.Input {
		t.Errorf("listed recording %+v, want recording with input", x.Recording)
	}
	// Alice2 may not watch (not even herself: she reads no one's requests).
	if _, err := te.c.WithToken(te.alice).Watch(ctx, x.ID); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("watch by the requester: %v, want 403", err)
	}
	ws, err := te.c.WithToken(dave).Watch(ctx, x.ID)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer ws.CloseNow()
	var seen strings.Builder
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			typ, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				seen.Write(b)
				if strings.Contains(seen.String(), "echo: marker-7") {
					return
				}
			}
		}
	}()
	waitFor(t, "the person to see the watching notice", func() bool {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		return slices.ContainsFunc(tc.notices, func(s string) bool { return strings.Contains(s, "dave is watching") })
	})
	if err := tc.ws.Write(ctx, websocket.MessageText, []byte(`{"type":"resize","cols":120,"rows":40}`)); err != nil {
		t.Fatal(err)
	}
	if err := tc.ws.Write(ctx, websocket.MessageBinary, []byte("marker-7\r")); err != nil {
		t.Fatal(err)
	}
	tc.waitOutput(t, "echo: marker-7")
	select {
	case <-watched:
	case <-time.After(10 * time.Second):
		t.Fatalf("the watcher saw %q, never the marker", seen.String())
	}
	if !strings.Contains(seen.String(), "echo: marker-7") {
		t.Fatalf("the watcher saw %q", seen.String())
	}
	if _, err := te.c.KillSession(ctx, x.ID, "test over"); err != nil {
		t.Fatal(err)
	}
	tc.waitEnd(t)

	var rec store.Recording
	waitFor(t, "the recording to be saved", func() bool {
		rec, err = te.st.GetRecording(ctx, x.ID)
		return err == nil && rec.SavedAt != nil
	})
	var file strings.Builder
	sha, err := te.c.Recording(ctx, x.ID, &file)
	if err != nil {
		t.Fatal(err)
	}
	h, events, err := recording.Parse(strings.NewReader(file.String()))
	if err != nil {
		t.Fatalf("the recording is not asciicast v2: %v\n%s", err, file.String())
	}
	if h.Width != 100 || h.Height != 30 || !strings.Contains(h.Title, x.ID) {
		t.Errorf("header %+v, want 100x30 naming the session", h)
	}
	var out, in, resize strings.Builder
	for _, e := range events {
		map[string]*strings.Builder{"o": &out, "i": &in, "r": &resize}[e.Code].WriteString(e.Data)
	}
	if !strings.Contains(out.String(), "echo: marker-7") || !strings.Contains(in.String(), "marker-7\r") || resize.String() != "120x40" {
		t.Errorf("recorded output %q, input %q, resize %q; want the echo, the keystrokes and 120x40", out.String(), in.String(), resize.String())
	}
	sum := sha256.Sum256([]byte(file.String()))
	var ev audit.Event
	evs, err := te.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.SessionRecorded)})
	if err != nil || len(evs) != 1 {
		t.Fatalf("session.recorded events %+v, %v; want one", evs, err)
	}
	ev = evs[0]
	if ev.Details["sha256"] != hex.EncodeToString(sum[:]) || sha != ev.Details["sha256"] || ev.Details["bytes"] != float64(file.Len()) || ev.Details["session"] != x.ID {
		t.Errorf("session.recorded %+v; the file served has sha256 %x and %d bytes (header %s)", ev.Details, sum, file.Len(), sha)
	}
	w, err := te.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.SessionWatched)})
	if err != nil || len(w) != 1 || w[0].Actor != "dave" || w[0].Details["session"] != x.ID || w[0].Details["principal"] != "alice2" {
		t.Errorf("session.watched events %+v, %v; want dave's of %s", w, err, x.ID)
	}
}

// waitFor polls cond until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatcherEndsWithItsCredential: a watch is checked when it starts, and
// again while it runs: a watcher whose token is revoked, or whose role that
// reads others' requests on the target is removed, stops seeing the
// terminal at once (before, the watch went on until the session ended).
func TestWatcherEndsWithItsCredential(t *testing.T) {
	for _, tt := range []struct {
		name string
		take func(te *termEnv, tokenID string) error
	}{
		{"token revoked", func(te *termEnv, id string) error { return te.c.RevokeToken(context.Background(), id) }},
		{"role removed", func(te *termEnv, _ string) error {
			return te.c.Unbind(context.Background(), wire.Binding{Principal: "user:dave", Role: "auditor", Scope: "*"})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			te := newTermEnv(t, nil)
			ctx := context.Background()
			if _, err := te.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:dave", Role: authz.Auditor, Scope: authz.Everywhere}, time.Now()); err != nil {
				t.Fatal(err)
			}
			dave, tok, err := te.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "dave", TTL: time.Hour}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			tc := dialTerm(t, te, "ubuntu", webterm.Start{Auth: webterm.AuthCertificate, Cols: 80, Rows: 24})
			var x wire.BastionSession
			waitFor(t, "the terminal to be watchable", func() bool {
				xs, err := te.c.SearchSessions(ctx, client.SessionQuery{Active: true, Principal: "alice2"})
				if err == nil && len(xs) == 1 && xs[0].Watchable {
					x = xs[0]
					return true
				}
				return false
			})
			ws, err := te.c.WithToken(dave).Watch(ctx, x.ID)
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			defer ws.CloseNow()
			closed := make(chan error, 1)
			go func() {
				for {
					if _, _, err := ws.Read(ctx); err != nil {
						closed <- err
						return
					}
				}
			}()
			waitFor(t, "the person to see the watching notice", func() bool {
				tc.mu.Lock()
				defer tc.mu.Unlock()
				return slices.ContainsFunc(tc.notices, func(s string) bool { return strings.Contains(s, "dave is watching") })
			})
			if err := tt.take(te, tok.ID); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-closed:
				if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
					t.Errorf("watch ended with %v, want a policy-violation close", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the watch went on 5 s after the watcher's credential was taken away")
			}
			waitFor(t, "the person to be told the watcher left", func() bool {
				tc.mu.Lock()
				defer tc.mu.Unlock()
				return slices.ContainsFunc(tc.notices, func(s string) bool { return strings.Contains(s, "dave stopped watching") })
			})
		})
	}
}

// TestCrossSiteWatchNotAudited: a page of another site that makes an
// auditor's browser open the watch socket with the console's cookie (evil
// Origin, or none) is refused before anything happens, so the trail does not
// say the auditor watched (before, session.watched was written and only
// then the upgrade refused). The console's own Origin passes.
func TestCrossSiteWatchNotAudited(t *testing.T) {
	te := newTermEnv(t, nil)
	ctx := context.Background()
	if _, err := te.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:dave", Role: authz.Auditor, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	sess, _, err := te.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindSession, Subject: "dave", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dialTerm(t, te, "ubuntu", webterm.Start{Auth: webterm.AuthCertificate, Cols: 80, Rows: 24})
	var x wire.BastionSession
	waitFor(t, "the terminal to be watchable", func() bool {
		xs, err := te.c.SearchSessions(ctx, client.SessionQuery{Active: true, Principal: "alice2"})
		if err == nil && len(xs) == 1 && xs[0].Watchable {
			x = xs[0]
			return true
		}
		return false
	})
	cookie := httpedge.SessionCookie + "=" + sess + "; " + httpedge.CSRFCookie + "=c"
	upgrade := []string{"Cookie", cookie, "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	path := "/api/v1/sessions/" + x.ID + "/watch"
	for _, origin := range []string{"https://evil.example", ""} {
		hdr := upgrade
		if origin != "" {
			hdr = append([]string{"Origin", origin}, upgrade...)
		}
		req, err := http.NewRequest("GET", te.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		// An accepted upgrade never ends its body: the timeout ends it.
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("watch with the cookie from Origin %q: %v", origin, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "Origin") {
			t.Errorf("watch with the cookie from Origin %q: %d %s, want 403 naming the Origin", origin, resp.StatusCode, body)
		}
	}
	if evs, err := te.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.SessionWatched)}); err != nil || len(evs) != 0 {
		t.Errorf("session.watched after cross-site opens: %+v, %v; want none", evs, err)
	}
}

// TestWatchesCountTowardSessionCap: a watch holds a connection like a
// tunnel or a terminal, so it counts toward the watcher's cap on open
// sessions: past it, 429 naming the cap (before, watches were unbounded).
func TestWatchesCountTowardSessionCap(t *testing.T) {
	ca := newCASigner(t)
	te := termEnvOn(t, newEnvWith(t, func(d *api.Deps) { d.SSHCA = ca; d.MaxSessionsPerPrincipal = 2 }), ca, newCASigner(t), nil)
	ctx := context.Background()
	if _, err := te.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:dave", Role: authz.Auditor, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	dave, _, err := te.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "dave", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dialTerm(t, te, "ubuntu", webterm.Start{Auth: webterm.AuthCertificate, Cols: 80, Rows: 24})
	var x wire.BastionSession
	waitFor(t, "the terminal to be watchable", func() bool {
		xs, err := te.c.SearchSessions(ctx, client.SessionQuery{Active: true, Principal: "alice2"})
		if err == nil && len(xs) == 1 && xs[0].Watchable {
			x = xs[0]
			return true
		}
		return false
	})
	dc := te.c.WithToken(dave)
	for range 2 {
		ws, err := dc.Watch(ctx, x.ID)
		if err != nil {
			t.Fatalf("a watch within the cap: %v", err)
		}
		defer ws.CloseNow()
	}
	if ws, err := dc.Watch(ctx, x.ID); client.StatusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "maximum of 2") {
		if ws != nil {
			ws.CloseNow()
		}
		t.Fatalf("a third watch: %v, want 429 naming the cap", err)
	}
}
