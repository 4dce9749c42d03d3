package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/webterm"
	"github.com/jitgate/jitgate/internal/wire"
)

// Recording and moderated join. Every browser terminal (internal/webterm)
// gets, besides the Observer the server configured (Deps.TerminalObserver),
// two of this package's: the recorder, when its port's rule says record,
// and the terminal's entry in the watch hub, which read-only watchers
// (GET /api/v1/sessions/{id}/watch) join.
//
// Who may do what:
//   - GET /api/v1/sessions/{id}/recording: the session's own principal, and
//     whoever reads others' requests on its target (approvers, policy
//     admins and auditors in its scope, admins): the same people who see the
//     session in the list. A recording shows what the person saw, which they
//     saw already; the rest already see who did what on that target.
//   - GET /api/v1/sessions/{id}/watch: whoever reads others' requests on the
//     session's target (approvers, auditors, policy admins, admins), not
//     the session's own principal for that reason alone. Watching is
//     audited (session.watched) and shown to the watched person.

// observe returns the ObserverFunc the terminal handler calls: the
// recorder (when the rule records), next's observer, and the watch hub's.
// A recording that cannot start refuses the session: a port that must be
// recorded is never reached unrecorded.
func (a *api) observe(next webterm.ObserverFunc) webterm.ObserverFunc {
	return func(info webterm.SessionInfo) (webterm.Observer, error) {
		var obs multiObserver
		if info.Rule.Record {
			r, err := a.startRecording(info)
			if err != nil {
				return nil, err
			}
			obs = append(obs, r)
		}
		if next != nil {
			o, err := next(info)
			if err != nil {
				obs.Close(a.Now(), "refused")
				return nil, err
			}
			if o != nil {
				obs = append(obs, o)
			}
		}
		obs = append(obs, a.terminals.add(info))
		return obs, nil
	}
}

// multiObserver passes each event to every observer in turn.
type multiObserver []webterm.Observer

func (m multiObserver) Output(at time.Time, p []byte) {
	for _, o := range m {
		o.Output(at, p)
	}
}

func (m multiObserver) Input(at time.Time, p []byte) {
	for _, o := range m {
		o.Input(at, p)
	}
}

func (m multiObserver) Resize(at time.Time, cols, rows int) {
	for _, o := range m {
		o.Resize(at, cols, rows)
	}
}

func (m multiObserver) Close(at time.Time, reason string) {
	for _, o := range m {
		o.Close(at, reason)
	}
}

// recorder writes one session's asciicast file and, when the session ends,
// audits the file's SHA-256 and size (session.recorded).
type recorder struct {
	a    *api
	id   string
	rec  recordingFile
	once sync.Once
	// end ends the session (SessionInfo.End); failed makes sure it is
	// called once, at the first write error.
	end    func(reason, message string)
	failed sync.Once
}

// recordingFile is what the recorder writes to (*recording.Recording).
type recordingFile interface {
	webterm.Observer
	Err() error
	Path() string
}

func (a *api) startRecording(info webterm.SessionInfo) (*recorder, error) {
	if a.Recordings == nil {
		return nil, fmt.Errorf("port %d of %s must be recorded, and this server keeps no recordings", info.Port, info.Target)
	}
	start := info.StartedAt
	if start.IsZero() {
		start = a.Now()
	}
	h := recording.Header{Width: info.Cols, Height: info.Rows, Timestamp: start.Unix(),
		Title: fmt.Sprintf("%s@%s:%d (%s, session %s)", info.Login, info.Target, info.Port, info.Principal, info.SessionID),
		Env:   map[string]string{"TERM": "xterm-256color"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The row first: a file without one would escape the retention sweep.
	if err := a.Store.StartRecording(ctx, store.Recording{SessionID: info.SessionID, Target: info.Target, Principal: info.Principal,
		RequestID: info.RequestID, Input: info.Rule.RecordInput, StartedAt: start}); err != nil {
		return nil, fmt.Errorf("starting the recording of session %s: %w", info.SessionID, err)
	}
	rec, err := a.Recordings.Create(info.SessionID, h, start, info.Rule.RecordInput)
	if err != nil {
		return nil, err
	}
	a.Logger.Info("recording a terminal session", "session", info.SessionID, "file", rec.Path(), "input", info.Rule.RecordInput)
	return &recorder{a: a, id: info.SessionID, rec: recFile{rec}, end: info.End}, nil
}

// recFile adapts *recording.Recording to recordingFile.
type recFile struct{ *recording.Recording }

func (f recFile) Close(at time.Time, _ string) {}
func (f recFile) save(at time.Time) (string, int64, error) {
	return f.Recording.Close(at)
}

func (r *recorder) Output(at time.Time, p []byte) { r.rec.Output(at, p); r.check() }
func (r *recorder) Input(at time.Time, p []byte)  { r.rec.Input(at, p); r.check() }
func (r *recorder) Resize(at time.Time, cols, rows int) {
	r.rec.Resize(at, cols, rows)
	r.check()
}

// check ends the session at the recording's first write error: events after
// it are dropped, so the session would run on unrecorded (fail closed).
func (r *recorder) check() {
	err := r.rec.Err()
	if err == nil {
		return
	}
	r.failed.Do(func() {
		r.a.Logger.Error("recording a terminal session failed; ending the session", "session", r.id, "err", err)
		if r.end != nil {
			r.end(string(session.Closed), "the session's recording failed")
		}
	})
}

// Close saves the file durably, then audits it. A recording that met a
// write error (or cannot be saved) is saved as incomplete, never complete.
func (r *recorder) Close(at time.Time, reason string) {
	r.once.Do(func() {
		var sha string
		var size int64
		var err error
		if s, ok := r.rec.(interface {
			save(time.Time) (string, int64, error)
		}); ok {
			sha, size, err = s.save(at)
		} else {
			err = r.rec.Err()
		}
		incomplete := false
		if err != nil {
			r.a.Logger.Error("saving a recording", "session", r.id, "err", err)
			// What reached the disk is kept, marked incomplete.
			incomplete = true
			sha, size, err = sumFile(r.rec.Path())
			if err != nil {
				r.a.Logger.Error("reading a failed recording", "session", r.id, "err", err)
				return // left unsaved: the next start saves it as incomplete
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.a.Store.SaveRecording(ctx, r.id, sha, size, incomplete, r.a.Now()); err != nil {
			r.a.Logger.Error("auditing a recording", "session", r.id, "err", err)
			return
		}
		r.a.Logger.Info("recording saved", "session", r.id, "sha256", sha, "bytes", size, "end", reason, "incomplete", incomplete)
	})
}

// sumFile is the SHA-256 and size of the file at p.
func sumFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	return recording.SumReader(f)
}

// sessionFilter is the search of GET /api/v1/sessions: ?id=, ?principal=
// (or ?user=), ?target=; each exact, all must match.
type sessionFilter struct{ id, principal, target string }

func sessionSearch(q url.Values) (sessionFilter, error) {
	f := sessionFilter{id: strings.TrimSpace(q.Get("id")), principal: strings.TrimSpace(q.Get("principal")), target: strings.TrimSpace(q.Get("target"))}
	if u := strings.TrimSpace(q.Get("user")); u != "" {
		if f.principal != "" && f.principal != u {
			return f, invalidField("user", "give principal or user, not both")
		}
		f.principal = u
	}
	for k, v := range map[string]string{"id": f.id, "principal": f.principal, "target": f.target} {
		if len(v) > 256 {
			return f, invalidField(k, "longer than 256 characters")
		}
	}
	return f, nil
}

// addRecordings fills in the recordings of the listed sessions and which
// of them can be watched here.
func (a *api) addRecordings(ctx context.Context, xs []wire.BastionSession) error {
	ids := make([]string, len(xs))
	for i, x := range xs {
		ids[i] = x.ID
	}
	recs, err := a.Store.RecordingsOf(ctx, ids)
	if err != nil {
		return err
	}
	for i := range xs {
		if rec, ok := recs[xs[i].ID]; ok {
			xs[i].Recording = toWireRecording(rec)
		}
		xs[i].Watchable = xs[i].State == string(session.Live) && a.terminals.get(xs[i].ID) != nil
	}
	return nil
}

// toWireRecording describes a recording; live says whether its session is.
func toWireRecording(x store.Recording) *wire.SessionRecording {
	out := &wire.SessionRecording{State: "recording", Input: x.Input, SHA256: x.SHA256, Bytes: x.Size, SavedAt: x.SavedAt, DeletedAt: x.DeletedAt}
	switch {
	case x.DeletedAt != nil:
		out.State = "deleted"
	case x.SavedAt != nil:
		out.State = "saved"
	}
	return out
}

// sessionFor returns session id when p may see it (its own, or p reads
// others' requests on its target as it was when the session started:
// targetAt). A principal that may see no one else's
// sessions learns nothing of ids that do not exist.
func (a *api) sessionFor(ctx context.Context, p store.Principal, id string, action authz.Action, ownOK bool) (session.Session, error) {
	x, err := a.Store.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		if rerr := a.require(ctx, p, action, nil); rerr != nil {
			return session.Session{}, rerr
		}
	}
	if err != nil {
		return session.Session{}, err
	}
	if ownOK && x.Principal == p.Name() {
		return x, nil
	}
	var cur *store.Target
	if err := a.require(ctx, p, action, a.targetAt(ctx, x.Target, x.StartedAt, &cur)); err != nil {
		return session.Session{}, err
	}
	return x, nil
}

// getRecording serves a session's asciicast file, after checking it
// against the SHA-256 and size saved with it (an altered file is refused
// and logged; jitgate sessions verify checks it against the audit chain).
func (a *api) getRecording(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	x, err := a.sessionFor(r.Context(), p, r.PathValue("id"), authz.ReadAnyRequest, true)
	if err != nil {
		return err
	}
	rec, err := a.Store.GetRecording(r.Context(), x.ID)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("session %s was not recorded: %w", x.ID, store.ErrNotFound)
	}
	if err != nil {
		return err
	}
	switch {
	case rec.DeletedAt != nil:
		return errStatus(http.StatusGone, "the recording of session %s was deleted at %s (its retention ended)", x.ID, rec.DeletedAt.Format(time.RFC3339))
	case rec.SavedAt == nil:
		return fmt.Errorf("session %s is still being recorded; its recording is served once the session ends: %w", x.ID, store.ErrConflict)
	case a.Recordings == nil:
		return errStatus(http.StatusServiceUnavailable, "this server keeps no recordings")
	}
	f, err := a.Recordings.Open(x.ID)
	if errors.Is(err, recording.ErrNotFound) {
		a.Logger.Error("a saved recording's file is missing", "session", x.ID)
		return errStatus(http.StatusInternalServerError, "the recording of session %s is missing from the server's disk", x.ID)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sha, size, err := recording.SumReader(f)
	if err != nil {
		return err
	}
	if sha != rec.SHA256 || size != rec.Size {
		a.Logger.Error("a recording does not match its saved SHA-256", "session", x.ID, "sha256", sha, "want", rec.SHA256)
		return errStatus(http.StatusInternalServerError, "the recording of session %s was altered on the server's disk: its SHA-256 %s is not the audited %s", x.ID, sha, rec.SHA256)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("X-Recording-SHA256", rec.SHA256)
	w.Header().Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", x.ID+".cast"))
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "", *rec.SavedAt, f)
	return nil
}

// replayMax is how much recent output a watcher who joins is shown first
// (the screen as it was, roughly: a full-screen program's last redraw).
const replayMax = 64 << 10

// watchQueue is how many frames may wait for one watcher; a watcher that
// falls further behind is dropped (the watched terminal never waits).
const watchQueue = 256

// terminals are the live browser terminals of this process, which
// watchers join.
type terminals struct {
	mu sync.Mutex
	m  map[string]*liveTerminal
}

type liveTerminal struct {
	h        *terminals
	info     webterm.SessionInfo
	mu       sync.Mutex
	cols     int
	rows     int
	replay   []byte
	watchers map[*watcher]struct{}
	closed   bool
}

type watcher struct {
	frames chan watchFrame
	gone   chan struct{}
	once   sync.Once
}

func (w *watcher) drop() { w.once.Do(func() { close(w.gone) }) }

type watchFrame struct {
	data []byte
	ctl  *webterm.Control
}

func (h *terminals) add(info webterm.SessionInfo) *liveTerminal {
	t := &liveTerminal{h: h, info: info, cols: info.Cols, rows: info.Rows, watchers: map[*watcher]struct{}{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]*liveTerminal{}
	}
	h.m[info.SessionID] = t
	return t
}

func (h *terminals) get(id string) *liveTerminal {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[id]
}

// send queues f for every watcher; the caller holds t.mu.
func (t *liveTerminal) send(f watchFrame) {
	for w := range t.watchers {
		select {
		case w.frames <- f:
		default:
			delete(t.watchers, w)
			w.drop()
		}
	}
}

func (t *liveTerminal) Output(_ time.Time, p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.replay = append(t.replay, p...)
	if n := len(t.replay); n > replayMax {
		t.replay = append(t.replay[:0:0], t.replay[n-replayMax:]...)
	}
	t.send(watchFrame{data: append([]byte(nil), p...)})
}

// Input is not shown to watchers: what the terminal echoes is output.
func (t *liveTerminal) Input(time.Time, []byte) {}

func (t *liveTerminal) Resize(_ time.Time, cols, rows int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cols, t.rows = cols, rows
	t.send(watchFrame{ctl: &webterm.Control{Type: webterm.TypeResize, Cols: cols, Rows: rows}})
}

func (t *liveTerminal) Close(_ time.Time, reason string) {
	t.h.mu.Lock()
	if t.h.m[t.info.SessionID] == t {
		delete(t.h.m, t.info.SessionID)
	}
	t.h.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.send(watchFrame{ctl: &webterm.Control{Type: webterm.TypeEnd, Reason: reason, Message: "the session ended"}})
	for w := range t.watchers {
		close(w.frames)
	}
	t.watchers = nil
}

// join adds a watcher, which first gets the terminal's size and its recent
// output; ok is false once the terminal has ended.
func (t *liveTerminal) join() (*watcher, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	w := &watcher{frames: make(chan watchFrame, watchQueue+2), gone: make(chan struct{})}
	w.frames <- watchFrame{ctl: &webterm.Control{Type: webterm.TypeResize, Cols: t.cols, Rows: t.rows}}
	if len(t.replay) > 0 {
		w.frames <- watchFrame{data: append([]byte(nil), t.replay...)}
	}
	t.watchers[w] = struct{}{}
	return w, true
}

func (t *liveTerminal) leave(w *watcher) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.watchers, w)
}

// watcherCheck says why p may no longer watch session x ("" when p may):
// the token p watches with was revoked or expired, or p no longer reads
// others' requests on x's target. A read that fails decides nothing.
func (a *api) watcherCheck(ctx context.Context, p store.Principal, x session.Session) string {
	_, err := a.Store.GetToken(ctx, p.TokenID, a.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "the watcher's token was revoked or expired"
	case err != nil:
		return ""
	}
	var cur *store.Target // the target as it was when x started, as sessionFor judged it
	if err := a.require(ctx, p, authz.ReadAnyRequest, a.targetAt(ctx, x.Target, x.StartedAt, &cur)); errors.Is(err, errForbidden) {
		return "the watcher may no longer read others' requests on " + x.Target
	}
	return ""
}

// watchTerminal lets an approver or auditor watch a live browser terminal
// read-only: what the target prints, resizes and the end. What the watcher
// sends is read and dropped. The watched person is told who watches
// (webterm's notice), and the watch is audited before it starts.
func (a *api) watchTerminal(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	// With the console's cookie the upgrade must come from the console's
	// own pages, checked before anything is audited: a page of another
	// site must not make the trail say an auditor watched.
	if _, ok := bearer(r); !ok && isUpgrade(r) && !sameOriginWS(r) {
		return fmt.Errorf("a watch opened with the console's cookie must come from the console's own pages (Origin %q is not this server): %w",
			r.Header.Get("Origin"), errForbidden)
	}
	x, err := a.sessionFor(r.Context(), p, r.PathValue("id"), authz.ReadAnyRequest, false)
	if err != nil {
		return err
	}
	t := a.terminals.get(x.ID)
	if x.State != session.Live || t == nil {
		return fmt.Errorf("session %s is not a live browser terminal on this server (only those can be watched): %w", x.ID, store.ErrConflict)
	}
	// A plain GET (the page asking why an upgrade failed) learns that it
	// would pass, and is not a watch: nothing is audited.
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return errStatus(http.StatusUpgradeRequired, "every check passed: open this URL as a WebSocket to watch")
	}
	// A watch holds a connection and goroutines like a tunnel or a
	// terminal: it counts toward the watcher's cap on open sessions.
	maxSessions := a.MaxSessionsPerPrincipal
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessionsPerPrincipal
	}
	release, ok := a.sessions.reserve(p.Name(), maxSessions)
	if !ok {
		return errStatus(http.StatusTooManyRequests, "%s already holds the maximum of %d open bastion sessions and watches; close some first", p.Name(), maxSessions)
	}
	defer release()
	if err := a.Store.Audit(r.Context(), audit.Event{At: a.Now(), Actor: p.Name(), Action: audit.SessionWatched, Target: x.Target,
		RequestID: x.RequestID, ClientAddr: addrString(a.clientAddr(r)), Details: map[string]any{"session": x.ID, "principal": x.Principal}}); err != nil {
		return err
	}
	// The Origin was checked above for a cookie; a bearer client sends none.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled, InsecureSkipVerify: true})
	if err != nil {
		return nil
	}
	defer c.CloseNow()
	wt, ok := t.join()
	if !ok {
		c.Close(websocket.StatusNormalClosure, "the session ended")
		return nil
	}
	defer t.leave(wt)
	if t.info.Notice != nil {
		t.info.Notice(p.Name() + " is watching this session (read-only)")
		defer t.info.Notice(p.Name() + " stopped watching")
	}
	a.Logger.Info("watching a terminal session", "session", x.ID, "watcher", p.Name())
	ctx := c.CloseRead(context.WithoutCancel(r.Context())) // read-only: what the watcher sends is dropped
	// The watcher's right is checked again while the watch runs: at once
	// when a token is revoked or a binding removed (credentialsChanged),
	// and every credentialRecheck otherwise (an expiry, a console logout).
	wake, unwake := a.sessions.addWatcher()
	defer unwake()
	recheck := time.NewTicker(credentialRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-wake:
			if why := a.watcherCheck(ctx, p, x); why != "" {
				c.Close(websocket.StatusPolicyViolation, why)
				return nil
			}
		case <-recheck.C:
			if why := a.watcherCheck(ctx, p, x); why != "" {
				c.Close(websocket.StatusPolicyViolation, why)
				return nil
			}
		case f, ok := <-wt.frames:
			if !ok {
				c.Close(websocket.StatusNormalClosure, "the session ended")
				return nil
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if f.ctl != nil {
				b, _ := json.Marshal(f.ctl)
				err = c.Write(wctx, websocket.MessageText, b)
			} else {
				err = c.Write(wctx, websocket.MessageBinary, f.data)
			}
			cancel()
			if err != nil {
				return nil
			}
		case <-wt.gone:
			c.Close(websocket.StatusPolicyViolation, "too slow: fell "+strconv.Itoa(watchQueue)+" frames behind")
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
