package api

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// RefusalWindow is how long identical refusals are counted before they are
// audited as one event.
const RefusalWindow = time.Minute

// maxOpenRefusals bounds the refusals counted in memory; when a new kind
// arrives with the table full, everything counted so far is written at once.
const maxOpenRefusals = 10_000

// auditWriter is what a RefusalLog needs of the store.
type auditWriter interface {
	AuditEvents(ctx context.Context, es []audit.Event) error
}

// RefusalLog audits repeated identical refusals (a wrong role, a request
// over a cap on live requests) once per RefusalWindow with a count, instead
// of once per call: a client hammering a refused call cannot grow the audit
// trail (and the webhook outbox) by a row per call. Refusals are identical
// when they share principal, action, target and reason; the event written
// is the first of its window, with details count (how many) and last_at.
//
// A window's event is written when the window ends (Flush, called by Run),
// and every open window is written by Close at shutdown. What a crash loses
// is at most one window of refusal counts, never a state change: refusals
// change nothing. After Close, refusals are written one by one at once.
type RefusalLog struct {
	st     auditWriter
	log    *slog.Logger
	window time.Duration

	mu     sync.Mutex
	open   map[refusalKey]*refusal
	closed bool
}

type refusalKey struct {
	actor  string
	action audit.Action
	target string
	reason string
}

type refusal struct {
	first audit.Event
	count int
	last  time.Time
}

// NewRefusalLog returns a RefusalLog writing to st.
func NewRefusalLog(st auditWriter, log *slog.Logger) *RefusalLog {
	if log == nil {
		log = slog.Default()
	}
	return &RefusalLog{st: st, log: log, window: RefusalWindow, open: map[refusalKey]*refusal{}}
}

// Record counts a refusal; e.At is when it happened. What it writes at once
// (after Close, or when the table is full) is written even if ctx (the
// refused request's) is cancelled meanwhile.
func (l *RefusalLog) Record(ctx context.Context, e audit.Event) {
	ctx = context.WithoutCancel(ctx)
	k := refusalKey{actor: e.Actor, action: e.Action, target: e.Target, reason: e.Reason}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.write(ctx, []audit.Event{withCount(e, 1, e.At)})
		return
	}
	if r, ok := l.open[k]; ok {
		r.count++
		r.last = e.At
		l.mu.Unlock()
		return
	}
	var full []audit.Event
	if len(l.open) >= maxOpenRefusals {
		full = l.takeLocked(func(*refusal) bool { return true })
	}
	l.open[k] = &refusal{first: e, count: 1, last: e.At}
	l.mu.Unlock()
	l.write(ctx, full)
}

// Flush writes the refusals whose window ended at or before now.
func (l *RefusalLog) Flush(ctx context.Context, now time.Time) {
	l.mu.Lock()
	due := l.takeLocked(func(r *refusal) bool { return !now.Before(r.first.At.Add(l.window)) })
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

// takeLocked removes the refusals that match and returns their events,
// oldest first.
func (l *RefusalLog) takeLocked(match func(*refusal) bool) []audit.Event {
	var out []audit.Event
	for k, r := range l.open {
		if match(r) {
			out = append(out, withCount(r.first, r.count, r.last))
			delete(l.open, k)
		}
	}
	// The trail is in order of writing: oldest first.
	slices.SortStableFunc(out, func(a, b audit.Event) int { return a.At.Compare(b.At) })
	return out
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
