package web

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/wire"
)

// view is what every template receives; each page fills its own part.
type view struct {
	Title   string
	Path    string
	Version string
	Session *session
	Error   string
	// sign-in
	Return string
	SSO    bool
	// no role: the configured contact (nil: none)
	Contact *Contact

	Dash      *dashView
	Target    *targetView
	Approvals *approvalsView
	Audit     *auditView
	Sessions  *sessionsView
	Terminal  *terminalView
	Player    *playerView
	Watch     *watchView
}

// The dashboard's tabs: the classes of wire.Target.Class.
const (
	tabConfigured   = "configured"
	tabUnconfigured = "not-configured"
	tabUnsupported  = "unsupported"
	// tabNotEnforcing holds targets with a policy that nothing enforces
	// yet: their agent (or their gateway's) never connected, so their
	// ports are as open as without a policy and must not look protected.
	tabNotEnforcing = "not-enforcing"
)

// classify puts a target in a dashboard tab and says why: the server's
// classification (internal/inventory: an agent that reports
// can_enforce=false is unsupported), with its reason or recommendation.
func classify(t wire.Target) (tab, hint string) {
	tab = t.Class
	if tab == "" { // a server without the inventory classification
		tab = tabUnconfigured
		if t.Policy != nil && len(t.Policy.Rules) > 0 {
			tab = tabConfigured
		}
	}
	hint = t.ClassReason
	if tab == tabUnconfigured {
		hint = t.Recommendation
		if hint == "" {
			hint = "enable JIT to close its management ports until someone asks"
		}
	}
	if tab == tabUnsupported {
		if hint == "" {
			hint = "the agent reports it cannot program the firewall"
		}
		return tab, "Cannot enforce: " + hint + "."
	}
	if tab == tabConfigured && t.Agent.State == "never" {
		return tabNotEnforcing, "Not enforcing yet: no agent has connected, so its ports are still open to every source. Install and enroll the agent (jitgate agent --enroll-token ...)."
	}
	if hint != "" {
		hint = strings.ToUpper(hint[:1]) + hint[1:] + "."
	}
	return tab, hint
}

// DefaultPolicy is what "enable JIT" applies: the management ports of
// Linux and Windows hosts, 3 h at most, any single source address.
func DefaultPolicy() wire.Policy {
	var p wire.Policy
	for _, port := range []uint16{22, 3389, 5985, 5986} {
		p.Rules = append(p.Rules, wire.PortRule{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(3 * time.Hour)})
	}
	return p
}

type dashView struct {
	Tab        string
	Tabs       []tabView
	Q, Label   string
	Rows       []targetRow
	Total      int
	Pending    int
	CanEnable  bool
	DefaultJIT string
	// Alerts are the break-glass openings not reviewed yet, shown to
	// auditors and admins until one of them reviews each.
	Alerts []wire.BreakGlassAlert
}

type tabView struct {
	ID, Label, Href string
	Count           int
	Current         bool
}

type targetRow struct {
	T       wire.Target
	Ports   string
	Labels  string
	Search  string // lower-case name and labels, for the script's live filter
	Grants  []wire.Request
	Hint    string
	Blocked uint64
}

func (c *console) dashboard(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	ts, err := getAll[wire.Target](c, r, "/api/v1/targets", nil)
	if err != nil {
		return "", nil, err
	}
	live, err := getAll[wire.Request](c, r, "/api/v1/requests", url.Values{"active": {"true"}})
	if err != nil {
		return "", nil, err
	}
	waiting, err := getAll[wire.Request](c, r, "/api/v1/requests", url.Values{"state": {"pending_approval"}})
	if err != nil {
		return "", nil, err
	}
	grants := map[string][]wire.Request{}
	for _, req := range live {
		grants[req.Target] = append(grants[req.Target], req)
	}
	q := r.URL.Query()
	d := &dashView{Q: strings.TrimSpace(q.Get("q")), Label: strings.TrimSpace(q.Get("label")), Tab: q.Get("tab"),
		Total: len(ts), CanEnable: s.can("policy-admin"), DefaultJIT: "22, 3389, 5985, 5986/tcp, up to 3 h"}
	for _, req := range waiting {
		if req.Requester != s.Subject {
			d.Pending++
		}
	}
	if s.can("auditor") {
		// The API decides: an auditor scoped to some targets does not read
		// the installation's alerts (403), and sees the dashboard without.
		if err := c.get(r, "/api/v1/breakglass/alerts", url.Values{"open": {"true"}}, &d.Alerts); err != nil && apiStatus(err) != http.StatusForbidden {
			return "", nil, err
		}
	}
	counts := map[string]int{}
	byTab := map[string][]targetRow{}
	for _, t := range ts {
		tab, hint := classify(t)
		if !matches(t, d.Q, d.Label) {
			continue
		}
		counts[tab]++
		row := targetRow{T: t, Hint: hint, Grants: grants[t.Name], Labels: labelText(t.Labels)}
		row.Search = strings.ToLower(t.Name + " " + row.Labels)
		if t.Policy != nil {
			var ps []string
			for _, pr := range t.Policy.Rules {
				ps = append(ps, portKey(pr))
			}
			row.Ports = strings.Join(ps, ", ")
		}
		if t.Blocked != nil {
			for _, b := range t.Blocked.Counters {
				row.Blocked += b.Connections
			}
		}
		byTab[tab] = append(byTab[tab], row)
	}
	if d.Tab == "unconfigured" {
		d.Tab = tabUnconfigured
	}
	if d.Tab != tabConfigured && d.Tab != tabUnconfigured && d.Tab != tabUnsupported && d.Tab != tabNotEnforcing {
		d.Tab = tabConfigured
		if counts[tabConfigured] == 0 && counts[tabUnconfigured] > 0 {
			d.Tab = tabUnconfigured
		}
	}
	d.Rows = byTab[d.Tab]
	for _, tb := range []struct{ id, label string }{
		{tabConfigured, "JIT configured"}, {tabNotEnforcing, "Not enforcing yet"}, {tabUnconfigured, "Not configured"}, {tabUnsupported, "Unsupported"},
	} {
		v := url.Values{"tab": {tb.id}}
		if d.Q != "" {
			v.Set("q", d.Q)
		}
		if d.Label != "" {
			v.Set("label", d.Label)
		}
		d.Tabs = append(d.Tabs, tabView{ID: tb.id, Label: tb.label, Count: counts[tb.id], Href: "/ui/?" + v.Encode(), Current: tb.id == d.Tab})
	}
	return "dashboard", &view{Title: "Targets", Dash: d}, nil
}

// matches applies the dashboard's search (name or label, any part) and
// label filter (key=value exactly, or a key that is present).
func matches(t wire.Target, q, label string) bool {
	if q != "" {
		lq := strings.ToLower(q)
		if !strings.Contains(strings.ToLower(t.Name+" "+labelText(t.Labels)), lq) {
			return false
		}
	}
	if label != "" {
		k, v, hasValue := strings.Cut(label, "=")
		got, ok := t.Labels[strings.TrimSpace(k)]
		if !ok || hasValue && got != strings.TrimSpace(v) {
			return false
		}
	}
	return true
}

func labelText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}

func portKey(r wire.PortRule) string {
	p := r.Protocol
	if p == "" {
		p = "tcp"
	}
	return fmt.Sprintf("%d/%s", r.Port, p)
}

// ---- target page ----

type targetView struct {
	T         wire.Target
	Tab, Hint string
	Rules     []ruleView
	EditRules []ruleView // the editor's rows: the policy, or the default one
	NewRule   ruleView   // the editor's template for an added row
	Live      []wire.Request
	// Closing are ended requests whose agent has not confirmed yet that
	// their grants left the kernel: they may still be open until their
	// deadline.
	Closing    []wire.Request
	Recent     []wire.Request
	Audit      []wire.AuditEvent
	AuditErr   string
	Connect    []string
	ClientAddr string
	// Terminals are the Connect links of the viewer's live requests, by id.
	Terminals  map[string][]termLink
	CanRequest bool
	CanEdit    bool
	CanApprove bool
}

type ruleView struct {
	Key         string // 22/tcp
	Port        uint16
	Protocol    string
	Max         string // 3h
	MaxSeconds  int64
	Sources     string // comma-separated prefixes; empty: one address
	Mode        string // auto | manual
	Approvals   int
	ReasonReq   bool
	ReasonMin   int
	ReasonMatch string
	CloseEst    bool
	Windows     string // "Mon-Fri 08:00-18:00 Europe/Berlin; ..."; empty: always
	Groups      string // "group:dba=1, group:security=1"; empty: none
	JSON        string // the rule as the API gave it: the editor keeps fields it does not show
}

func toRuleView(r wire.PortRule) ruleView {
	v := ruleView{Key: portKey(r), Port: r.Port, Protocol: r.Protocol, Max: fmtDuration(r.MaxDuration),
		MaxSeconds: int64(time.Duration(r.MaxDuration) / time.Second), Sources: strings.Join(r.AllowedSources, ", "), Mode: "auto"}
	if v.Protocol == "" {
		v.Protocol = "tcp"
	}
	if r.Approval != nil && r.Approval.Mode == "manual" {
		v.Mode, v.Approvals = "manual", r.Approval.Approvals
	}
	if j := r.Justification; j != nil {
		v.ReasonReq, v.ReasonMin, v.ReasonMatch = j.Required, j.MinLength, j.Pattern
	}
	v.CloseEst = r.CloseEstablished
	v.Windows = strings.Join(r.Windows, "; ")
	var gs []string
	for _, g := range r.Approvals {
		gs = append(gs, fmt.Sprintf("%s=%d", g.From, g.Count))
	}
	v.Groups = strings.Join(gs, ", ")
	v.JSON = compactJSON(r)
	return v
}

func (c *console) target(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	name := r.PathValue("name")
	var t wire.Target
	if err := c.get(r, "/api/v1/targets/"+url.PathEscape(name), nil, &t); err != nil {
		return "", nil, err
	}
	tv := &targetView{T: t, ClientAddr: s.ClientAddr, CanRequest: s.can("requester"), CanEdit: s.can("policy-admin"),
		CanApprove: s.can("approver")}
	tv.Tab, tv.Hint = classify(t)
	tv.NewRule = ruleView{Protocol: "tcp", Max: "3h", Mode: "auto"}
	if t.Policy != nil {
		for _, pr := range t.Policy.Rules {
			tv.Rules = append(tv.Rules, toRuleView(pr))
		}
		tv.EditRules = tv.Rules
	} else {
		for _, pr := range DefaultPolicy().Rules {
			tv.EditRules = append(tv.EditRules, toRuleView(pr))
		}
	}
	var reqs []wire.Request
	if err := c.get(r, "/api/v1/requests", url.Values{"target": {name}, "limit": {"50"}}, &reqs); err != nil {
		return "", nil, err
	}
	for _, req := range reqs {
		switch req.State {
		case "pending_approval", "pending", "active":
			tv.Live = append(tv.Live, req)
			if links := terminalLinks(t, req, s.Subject); len(links) > 0 {
				if tv.Terminals == nil {
					tv.Terminals = map[string][]termLink{}
				}
				tv.Terminals[req.ID] = links
			}
		}
		if req.Removal != nil && req.Removal.State == "unconfirmed" {
			tv.Closing = append(tv.Closing, req)
		}
	}
	tv.Recent = reqs
	var evs []wire.AuditEvent
	since := c.Now().Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	if err := c.get(r, "/api/v1/audit", url.Values{"target": {name}, "since": {since}, "limit": {"10000"}}, &evs); err != nil {
		if apiStatus(err) != http.StatusForbidden {
			return "", nil, err
		}
		tv.AuditErr = "Your roles do not include reading this target's audit trail."
	}
	slices.Reverse(evs)
	tv.Audit = evs[:min(len(evs), 25)]
	tv.Connect = connectHints(t, tv.Rules)
	return "target", &view{Title: t.Name, Target: tv}, nil
}

// connectHints says how to reach the target's protected ports once granted.
func connectHints(t wire.Target, rules []ruleView) []string {
	addr := t.Name
	if len(t.Addresses) > 0 {
		addr = t.Addresses[0]
	}
	host := addr
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	var out []string
	for _, r := range rules {
		switch {
		case r.Port == 22 && r.Protocol == "tcp":
			out = append(out, "ssh USER@"+addr)
		case r.Port == 3389:
			out = append(out, "mstsc /v:"+host+":3389   (Remote Desktop)")
		case r.Port == 5985 || r.Port == 5986:
			ssl := ""
			if r.Port == 5986 {
				ssl = " -UseSSL"
			}
			out = append(out, fmt.Sprintf("Enter-PSSession -ComputerName %s -Port %d%s   (WinRM)", addr, r.Port, ssl))
		default:
			out = append(out, fmt.Sprintf("%s:%d (%s)", host, r.Port, r.Protocol))
		}
	}
	return out
}

// ---- approvals ----

type approvalsView struct {
	Rows []approvalRow
}

type approvalRow struct {
	R        wire.Request
	Mine     bool
	Approved int
}

func (c *console) approvals(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	reqs, err := getAll[wire.Request](c, r, "/api/v1/requests", url.Values{"state": {"pending_approval"}})
	if err != nil {
		return "", nil, err
	}
	av := &approvalsView{}
	for _, req := range reqs {
		row := approvalRow{R: req, Mine: req.Requester == s.Subject}
		for _, d := range req.Decisions {
			if d.Decision == "approve" || d.Decision == "approved" {
				row.Approved++
			}
		}
		av.Rows = append(av.Rows, row)
	}
	return "approvals", &view{Title: "Approvals", Approvals: av}, nil
}

// ---- bastion sessions ----

type sessionsView struct {
	Live, Ended []wire.BastionSession
	// CanKill offers the Disconnect button: the person holds a role that
	// revokes others' access somewhere (approver, admin). The API decides
	// per session, in the session's target's scope.
	CanKill bool
	// CanWatch offers Watch on live browser terminals: the person holds a
	// role that reads others' requests somewhere (approver, auditor,
	// policy admin, admin); the API decides per session.
	CanWatch bool
	// Search is the search the list shows (id, user, target).
	Search struct{ ID, User, Target string }
	// Older, Newer and Newest link the pages of ended sessions ("" when
	// there is no such page, or this is the newest one); Page counts them
	// from 1, the newest.
	Older, Newer, Newest string
	Page                 int
	// Error says why the page of ended sessions could not be read (an
	// expired or altered place in the list).
	Error string
}

// endedPage is how many ended sessions one page of the Sessions page shows.
const endedPage = 50

// maxBack is how many earlier pages the Sessions page remembers for its
// Newer link (each is a cursor of some 350 characters in the address);
// from further back, Newest starts over.
const maxBack = 20

// sessions shows every live session and one page of ended ones, newest
// first. The ended sessions are paged with the API's own cursors: the
// page's address holds the cursor its page starts at (?cursor=, as the
// API gave it: sealed to this person, the list and the search) and those
// of the pages before it (?back=, "" for the first), so Older follows the
// API's next link and Newer goes back one page without the API listing
// backwards. A cursor the API refuses (older than its hour, or altered)
// leaves the page with a message and a link to the newest sessions.
func (c *console) sessions(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	sv := &sessionsView{CanKill: s.can("approver"), CanWatch: s.can("approver", "auditor", "policy-admin")}
	q := r.URL.Query()
	sv.Search.ID, sv.Search.User, sv.Search.Target = strings.TrimSpace(q.Get("id")), strings.TrimSpace(q.Get("user")), strings.TrimSpace(q.Get("target"))
	f := url.Values{}
	for k, v := range map[string]string{"id": sv.Search.ID, "principal": sv.Search.User, "target": sv.Search.Target} {
		if v != "" {
			f.Set(k, v)
		}
	}
	live := url.Values{"active": {"true"}}
	for k, v := range f {
		live[k] = v
	}
	var err error
	if sv.Live, err = getAll[wire.BastionSession](c, r, "/api/v1/sessions", live); err != nil {
		return "", nil, err
	}
	cursor, back := q.Get("cursor"), q["back"]
	if len(back) > maxBack {
		back = back[len(back)-maxBack:]
	}
	sv.Page = len(back) + 1
	// The console's own address of a page: the search, then the place.
	here := func(cursor string, back []string) string {
		u := url.Values{}
		for k, v := range map[string]string{"id": sv.Search.ID, "user": sv.Search.User, "target": sv.Search.Target} {
			if v != "" {
				u.Set(k, v)
			}
		}
		if cursor != "" {
			u.Set("cursor", cursor)
			u["back"] = back
		}
		if len(u) == 0 {
			return "/ui/sessions"
		}
		return "/ui/sessions?" + u.Encode()
	}
	if cursor != "" {
		sv.Newest = here("", nil)
		if len(back) > 0 {
			sv.Newer = here(back[len(back)-1], back[:len(back)-1])
		}
	}
	next, err := c.endedSessions(r, f, cursor, sv)
	if err != nil {
		if apiStatus(err) != http.StatusBadRequest || cursor == "" {
			return "", nil, err
		}
		sv.Ended, sv.Newer, sv.Error = nil, "", "This page's place in the list is no longer valid ("+err.Error()+"): start again from the newest sessions."
		return "sessions", &view{Title: "Sessions", Sessions: sv}, nil
	}
	if next != "" {
		sv.Older = here(next, append(slices.Clone(back), cursor))
	}
	return "sessions", &view{Title: "Sessions", Sessions: sv}, nil
}

// endedSessions reads into sv.Ended up to endedPage ended sessions that f
// selects, from the API's cursor on ("" from the newest), and returns the
// cursor the next page starts at ("" when the list ended). Live sessions
// are in the same list (newest first) and skipped, so it reads on through
// the API's pages until the console's page is full.
func (c *console) endedSessions(r *http.Request, f url.Values, cursor string, sv *sessionsView) (string, error) {
	for page := 0; page < 1000; page++ {
		q := url.Values{"limit": {strconv.Itoa(endedPage - len(sv.Ended))}}
		for k, v := range f {
			q[k] = v
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		rec, err := c.call(r, "/api/v1/sessions?"+q.Encode())
		if err != nil {
			return "", err
		}
		var xs []wire.BastionSession
		if err := json.Unmarshal(rec.body.Bytes(), &xs); err != nil {
			return "", fmt.Errorf("decoding /api/v1/sessions: %w", err)
		}
		for _, x := range xs {
			if x.State != "live" {
				sv.Ended = append(sv.Ended, x)
			}
		}
		cursor = ""
		if next := nextLink(rec.header.Values("Link")); next != "" {
			u, err := url.Parse(next)
			if err != nil {
				return "", fmt.Errorf("the sessions list's next link %q: %w", next, err)
			}
			cursor = u.Query().Get("cursor")
		}
		if cursor == "" || len(sv.Ended) >= endedPage {
			return cursor, nil
		}
	}
	return cursor, nil
}

// ---- recordings: playback and watching ----

// playerView is the playback page of one recorded session.
type playerView struct {
	Session wire.BastionSession
	// Src is the recording's URL (the API's, with the console's cookie).
	Src   string
	Nonce string
}

// sessionByID reads one session through the API (the list, searched by
// id: it shows only what the person may see).
func (c *console) sessionByID(r *http.Request, id string) (wire.BastionSession, error) {
	var xs []wire.BastionSession
	if err := c.get(r, "/api/v1/sessions", url.Values{"id": {id}}, &xs); err != nil {
		return wire.BastionSession{}, err
	}
	if len(xs) != 1 {
		return wire.BastionSession{}, &apiError{Status: http.StatusNotFound, Body: wire.Error{Error: "session " + id + ": not found"}}
	}
	return xs[0], nil
}

// player plays a session's recording with asciinema-player (vendored),
// which fetches GET /api/v1/sessions/{id}/recording.
func (c *console) player(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	x, err := c.sessionByID(r, r.PathValue("id"))
	if err != nil {
		return "", nil, err
	}
	if x.Recording == nil {
		return "", nil, &apiError{Status: http.StatusNotFound, Body: wire.Error{Error: "session " + x.ID + " was not recorded"}}
	}
	pv := &playerView{Session: x, Src: "/api/v1/sessions/" + url.PathEscape(x.ID) + "/recording", Nonce: random.Secret()}
	return "player", &view{Title: "Recording · " + x.ID, Player: pv}, nil
}

// watchView is the read-only view of a live browser terminal.
type watchView struct {
	Session wire.BastionSession
	Nonce   string
}

// watch shows a live browser terminal read-only (xterm.js, vendored),
// over GET /api/v1/sessions/{id}/watch; the watched person sees who
// watches, and the watch is audited.
func (c *console) watch(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	x, err := c.sessionByID(r, r.PathValue("id"))
	if err != nil {
		return "", nil, err
	}
	return "watch", &view{Title: "Watching · " + x.ID, Watch: &watchView{Session: x, Nonce: random.Secret()}}, nil
}

// bytesText writes a byte count for people: 512 B, 1.5 KiB, 3.2 MiB.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// ---- audit ----

type auditView struct {
	Target, Actor, Action, Since, Until string
	Events                              []wire.AuditEvent
	Limit                               int
	Truncated                           bool
	ExportCSV, ExportJSONL              string
	Actions                             []string
}

// auditActions are offered in the action filter.
var auditActions = []string{"request.created", "request.refused", "request.approved", "request.denied", "request.activated",
	"request.expired", "request.revoked", "request.failed", "request.superseded", "policy.set", "policy.removed",
	"target.added", "target.removed", "agent.enrolled", "agent.connected", "agent.disconnected", "agent.apply_failed",
	"login.succeeded", "login.failed", "access.denied", "token.created", "token.revoked", "binding.created", "binding.deleted",
	"session.started", "session.ended", "session.killed", "session.host_key_mismatch", "session.recorded", "session.watched", "recording.deleted"}

// The audit page's time inputs are datetime-local values, read as UTC.
const localMinute = "2006-01-02T15:04"

func (c *console) audit(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	q := r.URL.Query()
	av := &auditView{Target: strings.TrimSpace(q.Get("target")), Actor: strings.TrimSpace(q.Get("actor")),
		Action: strings.TrimSpace(q.Get("action")), Since: q.Get("since"), Until: q.Get("until"), Limit: 500, Actions: auditActions}
	if av.Since == "" && av.Until == "" {
		av.Since = c.Now().UTC().Add(-7 * 24 * time.Hour).Format(localMinute)
	}
	f := url.Values{}
	for k, v := range map[string]string{"target": av.Target, "actor": av.Actor, "action": av.Action} {
		if v != "" {
			f.Set(k, v)
		}
	}
	for k, v := range map[string]string{"since": av.Since, "until": av.Until} {
		if v == "" {
			continue
		}
		t, err := time.Parse(localMinute, v)
		if err != nil {
			if t, err = time.Parse(time.RFC3339, v); err != nil {
				return "audit", &view{Title: "Audit", Audit: av, Error: k + ": use a time such as 2026-01-02T15:04 (UTC)"}, nil
			}
		}
		f.Set(k, t.UTC().Format(time.RFC3339))
	}
	av.ExportCSV = "/api/v1/audit/export?" + withFormat(f, "csv")
	av.ExportJSONL = "/api/v1/audit/export?" + withFormat(f, "jsonl")
	lq := url.Values{}
	for k, v := range f {
		lq[k] = v
	}
	lq.Set("limit", strconv.Itoa(av.Limit))
	var evs []wire.AuditEvent
	if err := c.get(r, "/api/v1/audit", lq, &evs); err != nil {
		if st := apiStatus(err); st == http.StatusForbidden || st == http.StatusUnprocessableEntity {
			return "audit", &view{Title: "Audit", Audit: av, Error: err.Error()}, nil
		}
		return "", nil, err
	}
	av.Truncated = len(evs) == av.Limit
	slices.Reverse(evs)
	av.Events = evs
	return "audit", &view{Title: "Audit", Audit: av}, nil
}

func withFormat(f url.Values, format string) string {
	v := url.Values{"format": {format}}
	for k, vs := range f {
		v[k] = vs
	}
	return v.Encode()
}

// ---- templates ----

var funcs = template.FuncMap{
	"ago":      ago,
	"when":     when,
	"iso":      iso,
	"dur":      fmtDuration,
	"join":     strings.Join,
	"bytes":    bytesText,
	"labels":   labelText,
	"compact":  compactJSON,
	"details":  detailsText,
	"stateCls": func(s string) string { return "state state-" + strings.ReplaceAll(s, "_", "-") },
	"stateTxt": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"portList": func(rs []ruleView) string {
		k := make([]string, len(rs))
		for i, r := range rs {
			k[i] = r.Key
		}
		return strings.Join(k, ",")
	},
}

func (c *console) parse() error {
	for _, name := range []string{"signin", "error", "norole", "dashboard", "target", "approvals", "audit", "sessions", "terminal", "player", "watch"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("parsing console template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return nil
}

func asTime(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, !t.IsZero()
	case *time.Time:
		if t != nil {
			return *t, !t.IsZero()
		}
	}
	return time.Time{}, false
}

// ago is a rough relative time ("5 minutes ago"), for the server's clock
// at render time; the exact time is in the element's title.
func ago(v any) string { return agoAt(v, time.Now()) }

// agoAt words the time between v and now with go-humanize ("3 hours ago",
// "2 days ago"); under a minute it is "just now".
func agoAt(v any, now time.Time) string {
	t, ok := asTime(v)
	if !ok {
		return "never"
	}
	if d := now.Sub(t); d < time.Minute && d > -time.Minute {
		return "just now"
	}
	return humanize.RelTime(t, now, "ago", "from now")
}

func when(v any) string {
	t, ok := asTime(v)
	if !ok {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func iso(v any) string {
	t, ok := asTime(v)
	if !ok {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtDuration writes 3h instead of 3h0m0s.
func fmtDuration(d wire.Duration) string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// detailsText is an audit event's details for people: compact JSON whose
// durations read as durations ("3h", "30m", "1h30m") rather than Go's
// "1h30m0s" or a policy's nanoseconds.
func detailsText(v any) string {
	return compactJSON(humanDurations("", v))
}

// durationKeys are the detail keys (at any depth) that hold a duration.
var durationKeys = map[string]bool{"duration": true, "max_duration": true, "ttl": true, "idle_timeout": true, "extended_by": true}

func humanDurations(key string, v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = humanDurations(k, e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = humanDurations(key, e)
		}
		return out
	case float64:
		if durationKeys[key] && x > 0 {
			return fmtDuration(wire.Duration(time.Duration(x)))
		}
	case string:
		if d, err := time.ParseDuration(x); err == nil && durationKeys[key] {
			return fmtDuration(wire.Duration(d))
		}
	}
	return v
}

func compactJSON(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// ---- browser terminal ----

// termLink is a Connect button of a live request: a terminal to one of its
// ports whose rule allows the bastion and which is SSH (port 22, or a rule
// that names logins).
type termLink struct {
	Port uint16
	URL  string
}

// terminalLinks are the Connect links of req on t, for its own requester.
func terminalLinks(t wire.Target, req wire.Request, who string) []termLink {
	if req.State != "active" || req.Requester != who || t.Policy == nil {
		return nil
	}
	var out []termLink
	for _, p := range req.Ports {
		for _, pr := range t.Policy.Rules {
			if portKey(pr) != p && fmt.Sprint(pr.Port) != p {
				continue
			}
			if pr.Access != "bastion" && pr.Access != "both" || pr.Protocol != "" && pr.Protocol != "tcp" {
				continue
			}
			if pr.Port == 22 || len(pr.Logins) > 0 {
				out = append(out, termLink{Port: pr.Port, URL: fmt.Sprintf("/ui/terminal/%s?port=%d", url.PathEscape(req.ID), pr.Port)})
			}
		}
	}
	return out
}

type terminalView struct {
	Req    wire.Request
	Port   uint16
	Logins []string
	// Cert tells whether the server signs certificates for this port (its
	// rule names logins).
	Cert bool
	// Nonce is the style nonce of this response: xterm.js makes <style>
	// elements, which the page's CSP admits only with it.
	Nonce string
}

// terminal is the browser terminal of one live request's port: a form (login,
// how to log in) and the terminal, which app.js connects over a WebSocket
// to GET /api/v1/requests/{id}/terminal.
func (c *console) terminal(w http.ResponseWriter, r *http.Request, s *session) (string, *view, error) {
	id := r.PathValue("id")
	var req wire.Request
	if err := c.get(r, "/api/v1/requests/"+url.PathEscape(id), nil, &req); err != nil {
		return "", nil, err
	}
	port := uint16(22)
	if p := r.URL.Query().Get("port"); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", nil, &apiError{Status: http.StatusBadRequest, Body: wire.Error{Error: "port: not a port number"}}
		}
		port = uint16(n)
	}
	tv := &terminalView{Req: req, Port: port, Nonce: random.Secret()}
	var t wire.Target
	if err := c.get(r, "/api/v1/targets/"+url.PathEscape(req.Target), nil, &t); err != nil {
		return "", nil, err
	}
	if t.Policy != nil {
		for _, pr := range t.Policy.Rules {
			if pr.Port == port && (pr.Protocol == "" || pr.Protocol == "tcp") {
				tv.Logins = pr.Logins
			}
		}
	}
	tv.Cert = len(tv.Logins) > 0
	return "terminal", &view{Title: "Terminal · " + req.Target, Terminal: tv}, nil
}
