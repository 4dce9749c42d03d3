package recording_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// openStore opens a store on SQLite, or on a throwaway PostgreSQL
// database when pg (testenv.Postgres: skipped locally without one, a
// failure under CI).
func openStore(t *testing.T, pg bool) (*store.Store, *recording.Dir) {
	t.Helper()
	data := t.TempDir()
	var (
		st  *store.Store
		err error
	)
	if pg {
		st, err = store.OpenPostgres(context.Background(), testenv.Postgres(t), store.DefaultConfig())
	} else {
		st, err = store.OpenSQLite(context.Background(), filepath.Join(data, "j.db"), store.DefaultConfig())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d, err := recording.OpenDir(data)
	if err != nil {
		t.Fatal(err)
	}
	return st, d
}

// record makes a recorded session id on web-01 started at start, with
// output written and (when save) the recording saved as the server's
// recorder saves it; live leaves the session live.
func record(t *testing.T, st *store.Store, d *recording.Dir, id string, start time.Time, live, save bool) {
	t.Helper()
	ctx := context.Background()
	x := session.Session{ID: id, Target: "web-01", Principal: "alice", RequestID: "r-1", Protocol: "tcp", Port: 22,
		StartedAt: start, Deadline: start.Add(time.Hour), State: session.Live}
	if err := st.StartSession(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := st.StartRecording(ctx, store.Recording{SessionID: id, Target: "web-01", Principal: "alice", RequestID: "r-1", StartedAt: start}); err != nil {
		t.Fatal(err)
	}
	rec, err := d.Create(id, recording.Header{Width: 80, Height: 24}, start, false)
	if err != nil {
		t.Fatal(err)
	}
	rec.Output(start.Add(time.Second), []byte("marker-"+id+"\r\n"))
	if !save {
		rec.Finish(start) // flushed, but never saved: as a server that died
		return
	}
	sha, size, err := rec.Close(start.Add(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !live {
		if _, err := st.EndSession(ctx, id, session.Closed, "", "", 0, 0, start.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SaveRecording(ctx, id, sha, size, false, start.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func recordedEvent(t *testing.T, st *store.Store, action audit.Action, id string) (audit.Event, bool) {
	t.Helper()
	es, err := st.ListAudit(context.Background(), store.AuditFilter{Action: string(action)})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Details["session"] == id {
			return e, true
		}
	}
	return audit.Event{}, false
}

// TestRecordingSHA256InAuditChain: the saved recording's SHA-256 and size
// are in its session.recorded event, which the audit chain covers; they
// match the file on disk, and a file altered afterwards no longer does.
func TestRecordingSHA256InAuditChain(t *testing.T) {
	st, d := openStore(t, false)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute)
	record(t, st, d, "s-one", t0, false, true)

	e, ok := recordedEvent(t, st, audit.SessionRecorded, "s-one")
	if !ok {
		t.Fatal("no session.recorded event")
	}
	sha, size, err := d.Sum("s-one")
	if err != nil {
		t.Fatal(err)
	}
	if e.Details["sha256"] != sha || e.Details["bytes"] != float64(size) || e.Target != "web-01" || e.RequestID != "r-1" || e.Details["principal"] != "alice" {
		t.Errorf("session.recorded %+v; the file has sha256 %s, %d bytes", e, sha, size)
	}
	if res, err := st.VerifyAudit(ctx); err != nil || !res.OK {
		t.Errorf("audit chain: %+v, %v", res, err)
	}
	if err := st.SaveRecording(ctx, "s-one", "0000", 1, false, time.Now()); err == nil {
		t.Error("a recording was saved twice")
	}
	// Altering the file shows.
	f, err := os.OpenFile(filepath.Join(d.Path(), "s-one.cast"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("[9.0, \"o\", \"forged\"]\n")
	f.Close()
	if sha2, _, _ := d.Sum("s-one"); sha2 == e.Details["sha256"] {
		t.Error("the altered file still matches the audited SHA-256")
	}
}

// TestRetentionSweep: recordings older than the retention are deleted
// (file and record) and audited as recording.deleted; younger ones and the
// recording of a live session stay; an unsaved one a dead server left is
// saved as incomplete at start, and then expires like the others.
func TestRetentionSweep(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) { testRetentionSweep(t, pg) })
	}
}

func testRetentionSweep(t *testing.T, pg bool) {
	st, d := openStore(t, pg)
	ctx := context.Background()
	now := time.Now()
	const retention = 30 * 24 * time.Hour
	record(t, st, d, "s-old", now.Add(-31*24*time.Hour), false, true)
	record(t, st, d, "s-young", now.Add(-29*24*time.Hour), false, true)
	record(t, st, d, "s-unsaved", now.Add(-40*24*time.Hour), false, false)
	record(t, st, d, "s-live", now.Add(-40*24*time.Hour), true, false)
	// The dead server's session ended at the next start (server_lost).
	if _, err := st.EndSession(ctx, "s-unsaved", session.ServerLost, "", "", 0, 0, now); err != nil {
		t.Fatal(err)
	}

	if n, err := d.SaveUnfinished(ctx, st, now); err != nil || n != 1 {
		t.Fatalf("SaveUnfinished = %d, %v; want 1 (s-unsaved)", n, err)
	}
	if e, ok := recordedEvent(t, st, audit.SessionRecorded, "s-unsaved"); !ok || e.Details["incomplete"] != true {
		t.Errorf("s-unsaved's session.recorded: %+v, %v; want one marked incomplete", e, ok)
	}
	n, err := d.SweepExpired(ctx, st, retention, now)
	if err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v; want 1 (s-old; s-unsaved was saved just now)", n, err)
	}
	for id, gone := range map[string]bool{"s-old": true, "s-young": false, "s-unsaved": false, "s-live": false} {
		_, _, err := d.Sum(id)
		if (err != nil) != gone {
			t.Errorf("%s: file error %v, want gone=%v", id, err, gone)
		}
		x, err := st.GetRecording(ctx, id)
		if err != nil || (x.DeletedAt != nil) != gone {
			t.Errorf("%s: record %+v, %v; want deleted=%v", id, x, err, gone)
		}
		e, ok := recordedEvent(t, st, audit.RecordingDeleted, id)
		if ok != gone || ok && (e.Actor != audit.System || e.Details["sha256"] == "" || e.Reason == "") {
			t.Errorf("%s: recording.deleted %+v (%v), want one=%v by system with the sha256 and a reason", id, e, ok, gone)
		}
	}
	// A later sweep deletes what aged since, and nothing twice.
	if n, err := d.SweepExpired(ctx, st, retention, now.Add(2*retention)); err != nil || n != 2 {
		t.Errorf("second sweep = %d, %v; want 2 (s-young, s-unsaved; s-live is live)", n, err)
	}
	if res, err := st.VerifyAudit(ctx); err != nil || !res.OK {
		t.Errorf("audit chain: %+v, %v", res, err)
	}
}
