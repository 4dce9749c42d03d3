package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// auditEnv is a server whose trail holds events of two targets, with one
// request on web-01 activated by its agent.
func auditEnv(t *testing.T) (*env, wire.Request) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t)
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.addTarget(t, "db-01", "198.51.100.11")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	e.setPolicy(t, "db-01", sshPolicy("127.0.0.0/8"))
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(time.Hour), Reason: "=HYPERLINK(\"x\")"})
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatalf("Desired: %v", err)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Elements: 1}); err != nil {
		t.Fatalf("Report: %v", err)
	}
	return e, req
}

// export fetches /api/v1/audit/export with q and checks the headers.
func (e *env) export(t *testing.T, q url.Values, wantType, wantExt string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/v1/audit/export?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("reading export: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export %s: status %d: %s", q.Encode(), resp.StatusCode, b.Bytes())
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, wantType) {
		t.Errorf("Content-Type = %q, want %s", ct, wantType)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="jitgate-audit-`) || !strings.HasSuffix(cd, wantExt+`"`) {
		t.Errorf("Content-Disposition = %q, want an attachment named jitgate-audit-*%s", cd, wantExt)
	}
	return b.Bytes()
}

func jsonLines(t *testing.T, b []byte) []wire.AuditEvent {
	t.Helper()
	var out []wire.AuditEvent
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var ev wire.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d %q: %v", len(out)+1, sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

func TestAuditExportJSONLines(t *testing.T) {
	e, req := auditEnv(t)
	ctx := context.Background()
	all, err := e.c.Audit(ctx, client.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := jsonLines(t, e.export(t, url.Values{}, "application/x-ndjson", ".jsonl"))
	if len(got) != len(all) || len(got) < 8 {
		t.Fatalf("export has %d lines, the trail %d events", len(got), len(all))
	}
	for i := range got {
		if got[i].ID != all[i].ID || got[i].Action != all[i].Action {
			t.Errorf("line %d = %+v, want %+v", i+1, got[i], all[i])
		}
	}

	for _, tc := range []struct {
		q    url.Values
		want func(wire.AuditEvent) bool
	}{
		{url.Values{"target": {"web-01"}}, func(ev wire.AuditEvent) bool { return ev.Target == "web-01" }},
		{url.Values{"actor": {"alice"}, "action": {"request.created"}}, func(ev wire.AuditEvent) bool {
			return ev.Actor == "alice" && ev.Action == "request.created"
		}},
		{url.Values{"format": {"jsonl"}, "request": {req.ID}}, func(ev wire.AuditEvent) bool { return ev.RequestID == req.ID }},
		{url.Values{"until": {all[3].At.Add(time.Millisecond).Format(time.RFC3339Nano)}}, func(ev wire.AuditEvent) bool {
			return !ev.At.After(all[3].At)
		}},
	} {
		var want int
		for _, ev := range all {
			if tc.want(ev) {
				want++
			}
		}
		got := jsonLines(t, e.export(t, tc.q, "application/x-ndjson", ".jsonl"))
		if len(got) != want || want == 0 {
			t.Errorf("export %s: %d lines, want %d (> 0)", tc.q.Encode(), len(got), want)
		}
		for _, ev := range got {
			if !tc.want(ev) {
				t.Errorf("export %s: %+v does not match", tc.q.Encode(), ev)
			}
		}
	}
}

func TestAuditExportCSV(t *testing.T) {
	e, req := auditEnv(t)
	b := e.export(t, url.Values{"format": {"csv"}, "target": {"web-01"}, "action": {"request.created"}}, "text/csv", ".csv")
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("export is not CSV: %v\n%s", err, b)
	}
	want := []string{"id", "at", "actor", "action", "target", "request_id", "client_addr", "reason", "details"}
	if strings.Join(recs[0], ",") != strings.Join(want, ",") {
		t.Errorf("header = %q, want %q", recs[0], want)
	}
	if len(recs) != 2 {
		t.Fatalf("%d rows, want the header and one event:\n%s", len(recs), b)
	}
	r := recs[1]
	if r[2] != "alice" || r[3] != "request.created" || r[4] != "web-01" || r[5] != req.ID || r[6] != "127.0.0.1" {
		t.Errorf("row = %q", r)
	}
	if _, err := time.Parse(time.RFC3339, r[1]); err != nil {
		t.Errorf("at %q: %v", r[1], err)
	}
	// A reason a spreadsheet would run as a formula is neutralised.
	if r[7] != `'=HYPERLINK("x")` {
		t.Errorf("reason cell = %q, want a leading apostrophe", r[7])
	}

	b = e.export(t, url.Values{"format": {"csv"}}, "text/csv", ".csv")
	recs, err = csv.NewReader(bytes.NewReader(b)).ReadAll()
	all, _ := e.c.Audit(context.Background(), client.AuditFilter{})
	if err != nil || len(recs) != len(all)+1 {
		t.Errorf("unfiltered CSV: %d records, %v; want %d events and a header", len(recs), err, len(all))
	}
}

// TestAuditExportCSVSemicolonLocale: a spreadsheet in a locale that splits
// CSV on semicolons must not find a cell that starts a formula. Every ';'
// (and tab) of the export lies inside a quoted cell, so no split happens,
// and each cell still reads back whole with a comma-separated reader.
func TestAuditExportCSVSemicolonLocale(t *testing.T) {
	e := newEnv(t)
	at := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	reasons := []string{"ok;=1+2", "INC-1;@SUM(1+1)", "a;-2+3;+4", "x\t=cmd|' /C calc'!A0"}
	for _, r := range reasons {
		if err := e.st.Audit(context.Background(), audit.Event{At: at, Actor: "bob;=1", Action: audit.RequestRefused, Target: "web-01", Reason: r}); err != nil {
			t.Fatal(err)
		}
	}
	b := e.export(t, url.Values{"format": {"csv"}, "actor": {"bob;=1"}}, "text/csv", ".csv")
	for n, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		quotes := 0
		for i, c := range line {
			switch c {
			case '"':
				quotes++
			case ';', '\t':
				if quotes%2 == 0 {
					t.Errorf("line %d: %q at byte %d is outside quotes: a semicolon-locale spreadsheet splits the cell there:\n%s", n+1, c, i, line)
				}
			}
		}
	}
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(recs) != len(reasons)+1 {
		t.Fatalf("export: %d records, %v:\n%s", len(recs), err, b)
	}
	for i, r := range reasons {
		if got := recs[i+1][7]; got != r {
			t.Errorf("reason %d = %q, want %q", i, got, r)
		}
		if got := recs[i+1][2]; got != "bob;=1" {
			t.Errorf("actor = %q", got)
		}
	}
}

// TestAuditExportPages: an export holds every event, past the 1000 a
// listing returns at most by default.
func TestAuditExportPages(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 2345
	at := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	for i := range n {
		if err := e.st.Audit(ctx, audit.Event{At: at, Actor: "bob", Action: audit.RequestRefused, Reason: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := jsonLines(t, e.export(t, url.Values{"actor": {"bob"}}, "application/x-ndjson", ".jsonl"))
	if len(got) != n {
		t.Fatalf("export has %d events, want %d", len(got), n)
	}
	for i, ev := range got {
		if ev.Reason != fmt.Sprint(i) {
			t.Fatalf("event %d has reason %q, want %d: out of order or repeated", i, ev.Reason, i)
		}
	}
	var buf bytes.Buffer
	if err := e.c.ExportAudit(ctx, client.AuditFilter{Actor: "bob"}, "csv", &buf); err != nil {
		t.Fatalf("client ExportAudit: %v", err)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != n+1 {
		t.Errorf("client CSV export has %d lines, want %d", lines, n+1)
	}
}

func TestAuditBadFilters(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ path, field string }{
		{"/api/v1/audit/export?format=xml", "format"},
		{"/api/v1/audit/export?since=yesterday", "since"},
		{"/api/v1/audit?until=1h", "until"},
		{"/api/v1/audit?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"},
	} {
		status, b := e.raw(t, http.MethodGet, tc.path, e.admin, "", nil)
		if status != http.StatusUnprocessableEntity {
			t.Errorf("GET %s: status %d, want 422", tc.path, status)
		}
		if got := checkErrorBody(t, tc.path, b, tc.field); got.Field != tc.field {
			t.Errorf("GET %s: field %q, want %q", tc.path, got.Field, tc.field)
		}
	}
	for _, path := range []string{"/api/v1/audit/export", "/api/v1/audit/verify"} {
		if status, _ := e.raw(t, http.MethodGet, path, "", "", nil); status != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: status %d, want 401", path, status)
		}
	}
}

func TestAuditListActorUntil(t *testing.T) {
	e, _ := auditEnv(t)
	ctx := context.Background()
	all, err := e.c.Audit(ctx, client.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	es, err := e.c.Audit(ctx, client.AuditFilter{Actor: "agent:web-01"})
	if err != nil || len(es) == 0 {
		t.Fatalf("events by the agent web-01: %v, %v", es, err)
	}
	for _, ev := range es {
		if ev.Actor != "agent:web-01" {
			t.Errorf("actor filter let through %+v", ev)
		}
	}
	es, err = e.c.Audit(ctx, client.AuditFilter{Until: all[0].At.Add(time.Millisecond)})
	if err != nil || len(es) == 0 || len(es) == len(all) {
		t.Errorf("until the first event: %d of %d events, %v", len(es), len(all), err)
	}
}

func TestAuditVerifyEndpoint(t *testing.T) {
	e, _ := auditEnv(t)
	res, err := e.c.VerifyAudit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	all, _ := e.c.Audit(context.Background(), client.AuditFilter{})
	if !res.OK || res.Events != len(all) || res.FirstBadID != 0 || res.Problem != "" || len(res.HeadHash) != 64 {
		t.Errorf("verify = %+v, want ok with %d events and a head hash", res, len(all))
	}
}

func TestTargetStatsInTargets(t *testing.T) {
	e, _ := auditEnv(t)
	ctx := context.Background()
	tgt, err := e.c.Target(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if st := tgt.Stats; st == nil || st.LastAccess == nil || st.LastUser != "alice" || st.Approved7d != 1 {
		t.Errorf("web-01 stats = %+v, want last access by alice, 1 approved in 7 days", st)
	}
	ts, err := e.c.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range ts {
		switch {
		case tg.Stats == nil:
			t.Errorf("%s has no stats", tg.Name)
		case tg.Name == "web-01" && (tg.Stats.Approved7d != 1 || tg.Stats.LastUser != "alice"):
			t.Errorf("listed web-01 stats = %+v", tg.Stats)
		case tg.Name == "db-01" && (tg.Stats.Approved7d != 0 || tg.Stats.LastAccess != nil):
			t.Errorf("db-01 was never accessed, stats = %+v", tg.Stats)
		}
	}
	// The store answers the same.
	st, err := e.st.TargetStats(ctx, "web-01", time.Now())
	if err != nil || st.LastUser != "alice" {
		t.Errorf("store TargetStats = %+v, %v", st, err)
	}
}
