package api

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// exportPage is how many events an export reads from the store at a time.
const exportPage = 1000

// auditFilter reads the filters shared by listing and exporting the audit
// trail: target, request, action, actor, since, until (RFC 3339; since is
// inclusive, until exclusive), after and before (event ids, exclusive).
func auditFilter(q url.Values) (store.AuditFilter, error) {
	f := store.AuditFilter{Target: q.Get("target"), RequestID: q.Get("request"), Action: q.Get("action"), Actor: q.Get("actor")}
	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := q.Get(b.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return store.AuditFilter{}, invalidField(b.name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*b.dst = t
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return store.AuditFilter{}, invalidField("until", "must be later than since")
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return store.AuditFilter{}, invalidField("after", "must be an event id")
		}
		f.AfterID = n
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return store.AuditFilter{}, invalidField("before", "must be an event id")
		}
		f.BeforeID = n
	}
	return f, nil
}

// keepToScope narrows f, a listing of one target's events (?target=), to
// the parts of that target's history p's roles cover. auditReader admits
// the caller by the target's labels of today, but a name outlives its
// target: one removed and created again (with other labels) shares its
// name, and its events, with the one before. A reader of `env=prod` let in
// by today's prod target saw the events of the dev target of that name,
// from before. So events are judged by the labels their target had when
// they happened: those its target.added event recorded, until its
// target.removed. Events outside any such span (before the trail recorded
// a creation, or between a removal and the next creation) have no labels:
// covered by installation-wide and name scopes only. Readers whose roles
// cover the name whatever its labels (everywhere, target:NAME) see all.
func (a *api) keepToScope(ctx context.Context, p store.Principal, f *store.AuditFilter) error {
	if f.Target == "" {
		return nil
	}
	all, spans, err := a.readableSpans(ctx, p, f.Target)
	if err != nil || all {
		return err
	}
	f.InSpans, f.Spans = true, nil
	for _, sp := range spans {
		f.Spans = append(f.Spans, sp.IDSpan)
	}
	return nil
}

// lifeSpan is a part of a target's history: the audit events From to To
// (To 0: up to now), and the times of the events that begin and end it
// (ToAt zero: up to now), for what is kept by time (break-glass alerts).
type lifeSpan struct {
	store.IDSpan
	FromAt, ToAt time.Time
}

// covers reports whether something that happened at t lies in sp, ends
// included (times are milliseconds: what happened in the millisecond a
// target was removed and another of its name created counts for both).
func (sp lifeSpan) covers(t time.Time) bool {
	return !t.Before(sp.FromAt) && (sp.ToAt.IsZero() || !t.After(sp.ToAt))
}

// readableSpans returns the parts of target's history whose recorded
// labels p's roles cover (keepToScope), or all when they cover the name
// whatever its labels. The whole history is read: a list cut short
// would leave its last span open, over every later namesake.
func (a *api) readableSpans(ctx context.Context, p store.Principal, target string) (all bool, spans []lifeSpan, err error) {
	bs, err := a.Store.ListBindings(ctx)
	if err != nil {
		return false, nil, err
	}
	sub := p.Authz()
	if authz.Allowed(bs, sub, authz.ReadAudit, &authz.Target{Name: target}) {
		return true, nil, nil
	}
	const page = 10000
	var life []audit.Event
	for _, act := range []audit.Action{audit.TargetAdded, audit.TargetRemoved} {
		for after := int64(0); ; {
			es, err := a.Store.ListAudit(ctx, store.AuditFilter{Target: target, Action: string(act), AfterID: after, Limit: page})
			if err != nil {
				return false, nil, err
			}
			life = append(life, es...)
			if len(es) < page {
				break
			}
			after = es[len(es)-1].ID
		}
	}
	slices.SortFunc(life, func(x, y audit.Event) int { return cmp.Compare(x.ID, y.ID) })
	for i, e := range life {
		if e.Action != audit.TargetAdded {
			continue
		}
		t := &authz.Target{Name: target, Labels: recordedLabels(e.Details)}
		if !authz.Allowed(bs, sub, authz.ReadAudit, t) {
			continue
		}
		sp := lifeSpan{IDSpan: store.IDSpan{From: e.ID}, FromAt: e.At}
		if i+1 < len(life) {
			// The removal ends the span (it is the target's last event);
			// a second creation without one (a gateway's report of a
			// target already known) starts the next.
			sp.To, sp.ToAt = life[i+1].ID, life[i+1].At
			if life[i+1].Action != audit.TargetRemoved {
				sp.To--
			}
		}
		spans = append(spans, sp)
	}
	return false, spans, nil
}

// recordedLabels reads the labels a target.added event recorded (a JSON
// object of strings, or null).
func recordedLabels(details map[string]any) map[string]string {
	m, _ := details["labels"].(map[string]any)
	out := make(map[string]string, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// verifyAudit checks the whole hash chain of the audit trail.
func (a *api) verifyAudit(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	res, err := a.Store.VerifyAudit(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.AuditVerify{OK: res.OK, Events: res.Events, FirstBadID: res.FirstBad, Problem: res.Problem, HeadHash: res.Head})
	return nil
}

// exportAudit streams every matching event, oldest first, as JSON lines
// (one wire.AuditEvent per line) or CSV with a header row. Errors found
// before the first byte is sent are answered as usual; a failure later
// aborts the response, so the client sees it cut short instead of a
// complete-looking file.
func (a *api) exportAudit(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	format := q.Get("format")
	var (
		ctype string
		write func(*bufio.Writer, []audit.Event) error
	)
	switch format {
	case "", "jsonl":
		format, ctype, write = "jsonl", "application/x-ndjson", writeJSONLines
	case "csv":
		ctype, write = "text/csv; charset=utf-8", writeCSVRows
	default:
		return invalidField("format", "%q is not jsonl or csv", format)
	}
	f, err := auditFilter(q)
	if err != nil {
		return err
	}
	if err := a.keepToScope(r.Context(), p, &f); err != nil {
		return err
	}
	f.Limit = exportPage
	page, err := a.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	name := "jitgate-audit-" + a.Now().UTC().Format("20060102T150405Z") + "." + format
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)

	bw := bufio.NewWriterSize(w, 32<<10)
	if format == "csv" {
		if err := writeCSVHeader(bw); err != nil {
			return a.abortExport(err)
		}
	}
	for {
		if err := write(bw, page); err != nil {
			return a.abortExport(err)
		}
		if len(page) < exportPage {
			break
		}
		f.AfterID = page[len(page)-1].ID
		if page, err = a.Store.ListAudit(r.Context(), f); err != nil {
			return a.abortExport(err)
		}
	}
	if err := bw.Flush(); err != nil {
		return a.abortExport(err)
	}
	return nil
}

// abortExport ends a response whose status is already sent.
func (a *api) abortExport(err error) error {
	a.Logger.Warn("audit export cut short", "err", err)
	panic(http.ErrAbortHandler)
}

func writeJSONLines(w *bufio.Writer, es []audit.Event) error {
	enc := json.NewEncoder(w)
	for _, e := range es {
		if err := enc.Encode(toWireAudit(e)); err != nil {
			return err
		}
	}
	return nil
}

var csvHeader = []string{"id", "at", "actor", "action", "target", "request_id", "client_addr", "reason", "details"}

func writeCSVHeader(w io.Writer) error {
	return writeCSVRecord(w, csvHeader)
}

func writeCSVRows(w *bufio.Writer, es []audit.Event) error {
	for _, e := range es {
		details := ""
		if len(e.Details) > 0 {
			b, err := json.Marshal(e.Details)
			if err != nil {
				return err
			}
			details = string(b)
		}
		if err := writeCSVRecord(w, []string{strconv.FormatInt(e.ID, 10), e.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
			csvCell(e.Actor), csvCell(string(e.Action)), csvCell(e.Target), csvCell(e.RequestID), csvCell(e.ClientAddr),
			csvCell(e.Reason), details}); err != nil {
			return err
		}
	}
	return nil
}

// writeCSVRecord writes one CSV record (RFC 4180) with every cell quoted.
// encoding/csv quotes only cells holding a comma, quote or line break, so a
// reason such as "ok;=1+2" went out bare: a spreadsheet set to split on
// semicolons (the default in many locales) cut it in two and ran the second
// cell as a formula. Inside quotes no separator of any locale splits a cell.
func writeCSVRecord(w io.Writer, cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(strings.ReplaceAll(c, `"`, `""`))
		b.WriteByte('"')
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// csvCell keeps a spreadsheet from reading free text (a request's reason)
// as a formula: a cell starting with = + - @ or a control character gets
// a leading apostrophe (OWASP's advice on CSV injection).
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// toWireStats converts a target's access statistics.
func toWireStats(st store.TargetStats) *wire.TargetStats {
	return &wire.TargetStats{LastAccess: st.LastAccess, LastUser: st.LastUser, Approved7d: st.Approved7d}
}
