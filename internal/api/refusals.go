package api

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// RefusalWindow is how long the repeats of a refusal are counted before
// they are audited as one event.
const RefusalWindow = time.Minute

// maxOpenRefusals bounds the refusals counted in memory; when a new kind
// arrives with the table full, everything counted so far is written at once.
const maxOpenRefusals = 10_000

// maxKindsPerActor bounds the kinds of refusal one principal has open at
// once. A principal that varies what it asks for (a new target name or
// request id on every call) would otherwise make every call a kind of its
// own, written at once: a row per call again. Beyond the bound, its
// further kinds are counted as one (overflowReason), without target.
const maxKindsPerActor = 16

// overflowReason is the reason of a principal's refusals beyond
// maxKindsPerActor kinds in a window.
const overflowReason = "more different refusals than are audited one by one in a window"

// auditWriter is what a RefusalLog needs of the store.
type auditWriter interface {
	AuditEvents(ctx context.Context, es []audit.Event) error
}

// RefusalLog audits refusals (a wrong role, a request over a cap on live
// requests) so that a client hammering a refused call cannot grow the audit
// trail (and the webhook outbox) by a row per call, while an attack in
// progress still shows in the trail at once. Refusals are identical when
// they share principal, action, target and reason. The first of a kind is
// written at once, with details count 1; it opens a window of RefusalWindow
// in which identical refusals are only counted, and when the window ends
// they are written as one event: the first repeat's, with details count
// (how many repeats) and last_at. Summing count over the trail gives every
// refusal. The next refusal after the window is written at once again.
//
// Repeats are written by Flush (called by Run), and every open window by
// Close at shutdown. What a crash loses is at most one window of repeat
// counts, never a first refusal nor a state change: refusals change
// nothing. After Close, refusals are written one by one at once.
type RefusalLog struct {
	st     auditWriter
	log    *slog.Logger
	window time.Duration

	mu       sync.Mutex
	open     map[refusalKey]*refusal
	perActor map[string]int // open kinds per actor
	closed   bool
}

type refusalKey struct {
	actor  string
	action audit.Action
	target string
	reason string
}

// refusal is an open window: opened at, and the repeats counted in it.
type refusal struct {
	opened time.Time
	repeat audit.Event // the first repeat (zero while count is 0)
	count  int
	last   time.Time
}

// NewRefusalLog returns a RefusalLog writing to st.
func NewRefusalLog(st auditWriter, log *slog.Logger) *RefusalLog {
	if log == nil {
		log = slog.Default()
	}
	return &RefusalLog{st: st, log: log, window: RefusalWindow, open: map[refusalKey]*refusal{}, perActor: map[string]int{}}
}

// Record audits a refusal; e.At is when it happened. What it writes (the
// first of a kind, or everything counted when the table is full) is
// written even if ctx (the refused request's) is cancelled meanwhile.
func (l *RefusalLog) Record(ctx context.Context, e audit.Event) {
	ctx = context.WithoutCancel(ctx)
	k := refusalKey{actor: e.Actor, action: e.Action, target: e.Target, reason: e.Reason}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.write(ctx, []audit.Event{withCount(e, 1, e.At)})
		return
	}
	if _, ok := l.open[k]; !ok && l.perActor[e.Actor] >= maxKindsPerActor {
		e = overflow(e)
		k = refusalKey{actor: e.Actor, action: e.Action, reason: e.Reason}
	}
	if r, ok := l.open[k]; ok && e.At.Before(r.opened.Add(l.window)) {
		if r.count == 0 {
			r.repeat = e
		}
		r.count++
		r.last = e.At
		l.mu.Unlock()
		return
	}
	// The first of its kind (or of a new window): written now, after what
	// an ended window of the same kind counted.
	var out []audit.Event
	if r, ok := l.open[k]; ok {
		if r.count > 0 {
			out = append(out, withCount(r.repeat, r.count, r.last))
		}
		l.forgetLocked(k)
	}
	if len(l.open) >= maxOpenRefusals {
		out = append(out, l.takeLocked(func(*refusal) bool { return true })...)
	}
	l.open[k] = &refusal{opened: e.At}
	l.perActor[k.actor]++
	l.mu.Unlock()
	l.write(ctx, append(out, withCount(e, 1, e.At)))
}

// Flush writes the repeats of the windows that ended at or before now, and
// forgets those windows.
func (l *RefusalLog) Flush(ctx context.Context, now time.Time) {
	l.mu.Lock()
	due := l.takeLocked(func(r *refusal) bool { return !now.Before(r.opened.Add(l.window)) })
	l.mu.Unlock()
	l.write(ctx, due)
}

// Close writes every open window, whatever its age; later refusals are
// written at once. The server calls it at shutdown, before the store closes.
func (l *RefusalLog) Close(ctx context.Context) {
	l.mu.Lock()
	all := l.takeLocked(func(*refusal) bool { return true })
	l.closed = true
	l.mu.Unlock()
	l.write(ctx, all)
}

// Run flushes ended windows every few seconds until ctx ends; it does not
// Close.
func (l *RefusalLog) Run(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			l.Flush(ctx, now)
		}
	}
}

// takeLocked removes the windows that match and returns the events of
// their repeats, oldest first.
func (l *RefusalLog) takeLocked(match func(*refusal) bool) []audit.Event {
	var out []audit.Event
	for k, r := range l.open {
		if match(r) {
			if r.count > 0 {
				out = append(out, withCount(r.repeat, r.count, r.last))
			}
			l.forgetLocked(k)
		}
	}
	// The trail is in order of writing: oldest first.
	slices.SortStableFunc(out, func(a, b audit.Event) int { return a.At.Compare(b.At) })
	return out
}

// forgetLocked closes the window of k.
func (l *RefusalLog) forgetLocked(k refusalKey) {
	delete(l.open, k)
	if l.perActor[k.actor]--; l.perActor[k.actor] <= 0 {
		delete(l.perActor, k.actor)
	}
}

// overflow is e counted among its actor's overflowing refusals: what it
// names beyond the actor and action is dropped.
func overflow(e audit.Event) audit.Event {
	e.Target, e.RequestID, e.Reason = "", "", overflowReason
	d := map[string]any{}
	for _, k := range []string{"method", "status"} {
		if v, ok := e.Details[k]; ok {
			d[k] = v
		}
	}
	e.Details = d
	return e
}

func (l *RefusalLog) write(ctx context.Context, es []audit.Event) {
	if len(es) == 0 {
		return
	}
	if err := l.st.AuditEvents(ctx, es); err != nil {
		n := 0
		for _, e := range es {
			n += e.Details["count"].(int)
		}
		l.log.Error("auditing refused attempts failed; they are lost", "events", len(es), "refusals", n, "err", err)
	}
}

func withCount(e audit.Event, n int, last time.Time) audit.Event {
	d := make(map[string]any, len(e.Details)+2)
	for k, v := range e.Details {
		d[k] = v
	}
	d["count"] = n
	d["last_at"] = last.UTC().Format(time.RFC3339Nano)
	e.Details = d
	return e
}
