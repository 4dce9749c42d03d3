package api_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRawTunnelToRecordedPortRefused: on a port whose rule records, a live
// bastion grant does not open a raw tunnel (the server could not see into
// it): 403 naming the rule and the way that works, no session, and the
// refusal audited. The same grant on an unrecorded port opens one.
func TestRawTunnelToRecordedPortRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := echoPort(t)
	agent := bastionTarget(t, e, port, func(r *wire.PortRule) { r.Record = true })
	relayAgent(t, e, agent)
	grantBastion(t, e.c, port)
	applyDesired(t, agent)

	_, err := dialTunnel(e.c, port)
	if client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "recorded") || !strings.Contains(err.Error(), "jitgate ssh") {
		t.Fatalf("raw tunnel to a recorded port: %v, want 403 saying it is recorded and to use jitgate ssh", err)
	}
	if xs, err := e.st.ListSessions(ctx, false, 0); err != nil || len(xs) != 0 {
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
	start := time.Now().Add(-time.Minute)
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
