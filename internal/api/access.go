package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/buildinfo"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// maxTokenTTL bounds personal and service tokens.
const maxTokenTTL = 366 * 24 * time.Hour

// maxTokenName bounds a token's name, in characters.
const maxTokenName = 100

func authzTarget(t store.Target) *authz.Target {
	return &authz.Target{Name: t.Name, Labels: t.Labels}
}

// can reports whether p may do act on t (nil: the whole installation).
func (a *api) can(ctx context.Context, p store.Principal, act authz.Action, t *authz.Target) (bool, error) {
	bs, err := a.Store.ListBindings(ctx)
	if err != nil {
		return false, err
	}
	return authz.Allowed(bs, p.Authz(), act, t), nil
}

// require fails with a 403 that says what was refused unless p may do act on t.
func (a *api) require(ctx context.Context, p store.Principal, act authz.Action, t *authz.Target) error {
	ok, err := a.can(ctx, p, act, t)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	where := "this installation"
	if t != nil {
		where = "target " + t.Name
	}
	return fmt.Errorf("%s has no role that allows %s on %s: %w", p.Name(), act, where, errForbidden)
}

// readable reports whether p may see request r: its own, or any in scope of
// a role that reads requests.
func (a *api) readable(ctx context.Context, p store.Principal, r store.Request, t *authz.Target) (bool, error) {
	if r.Requester == p.Name() {
		return true, nil
	}
	return a.can(ctx, p, authz.ReadAnyRequest, t)
}

// targetOf returns the authorization view of a request's target; a removed
// target keeps only its name (covered by installation-wide scopes only).
func (a *api) targetOf(ctx context.Context, name string) *authz.Target {
	t, err := a.Store.GetTarget(ctx, name)
	if err != nil {
		return &authz.Target{Name: name}
	}
	return authzTarget(t)
}

// targetAt is target name as a record made at `at` (a session, a request)
// is judged by: today's target when it existed then, else the name alone. A
// name outlives its target: a session on the dev web-01 of last month,
// removed since, judged by today's prod web-01's labels would show an
// auditor of env=prod what their scope never covered (as the audit listing
// keeps to recorded labels, keepToScope). The name alone is covered only by
// scopes that cover it whatever its labels. t caches the lookup of today's
// target (nil: not read yet).
func (a *api) targetAt(ctx context.Context, name string, at time.Time, t **store.Target) *authz.Target {
	if *t == nil {
		got, err := a.Store.GetTarget(ctx, name)
		if err != nil {
			got = store.Target{} // none (or unreadable): judged by the name alone
		}
		*t = &got
	}
	return judgedBy(targetThen(*t, name, at), name)
}

// targetThen returns t when it is target name as it was at `at`: it bears
// the name and was created by then. Else nil: t is gone, or a namesake
// created since, whose labels, policy and addresses are not those of a
// record made at `at`. The times compared are written by the replicas'
// clocks (docs/design.md, threat model).
func targetThen(t *store.Target, name string, at time.Time) *store.Target {
	if t == nil || t.Name != name || at.Before(t.CreatedAt) {
		return nil
	}
	return t
}

// judgedBy is the authorization view of target name as t shows it (nil:
// the name alone, covered only by scopes that cover it whatever its labels).
func judgedBy(t *store.Target, name string) *authz.Target {
	if t == nil {
		return &authz.Target{Name: name}
	}
	return authzTarget(*t)
}

// requestTarget is the target request req is judged by: its target as it
// was when req was made (targetAt), not a namesake created since.
func (a *api) requestTarget(ctx context.Context, req store.Request) *authz.Target {
	var t *store.Target
	return a.targetAt(ctx, req.Target, req.CreatedAt, &t)
}

// targetFor loads target name for act by p. Authorization comes first, and
// a missing target is judged by its name alone (as targetOf does): a
// principal that may not do act there gets the same 403, word for word,
// whether the target exists or not, so target names cannot be probed
// through 404s. Only a principal whose roles would cover the name learns
// that it does not exist.
//
// A name that is not a target name (a DNS label) is refused first, for
// everyone: no target can hold it, so the refusal tells nothing about which
// exist, and the name, untrusted text from a URL path or a body, never
// reaches a message or the audit trail raw.
func (a *api) targetFor(ctx context.Context, p store.Principal, act authz.Action, name string) (store.Target, error) {
	return a.targetReadFor(ctx, p, act, name, a.Store.GetTarget)
}

// targetReadFor is targetFor with the target read by get (the create's
// narrower store.RequestTarget; the judgement is the same: by name and
// labels).
func (a *api) targetReadFor(ctx context.Context, p store.Principal, act authz.Action, name string, get func(context.Context, string) (store.Target, error)) (store.Target, error) {
	if policy.ValidateTargetName(name) != nil {
		return store.Target{}, invalidField("target", "%q is not a target name: targets are named by DNS labels, 1-63 lowercase letters, digits and '-'", name)
	}
	t, err := get(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Target{}, err
	}
	at := &authz.Target{Name: name}
	if err == nil {
		at = authzTarget(t)
	}
	if rerr := a.require(ctx, p, act, at); rerr != nil {
		return store.Target{}, rerr
	}
	return t, err
}

// maxAuditPath bounds the path a refusal records, in characters.
const maxAuditPath = 256

// requestID is the form of a request id (store.newRequestID: "r-" and
// base32 in lower case).
var requestID = regexp.MustCompile(`^r-[a-z2-7]{1,64}$`)

// auditDenied records a refused attempt to change something (a wrong role, an
// approval of one's own request, a stale decision, a request over a cap on
// live requests): the trail shows attempts, not only successes. Refusals by
// a target's policy are audited by the store, with the request. Identical
// refusals after the first are counted and audited once per window (RefusalLog), so that
// hammering a refused call does not grow the trail by a row per call.
func (a *api) auditDenied(r *http.Request, p store.Principal, err error) {
	var de *policy.DenyError
	if r.Method == http.MethodGet || r.Method == http.MethodHead || errors.As(err, &de) {
		return
	}
	status := statusOf(err)
	if status < 400 || status >= 500 || status == http.StatusUnauthorized {
		return
	}
	a.recordDenied(r, a.deniedEvent(r, p, err, status))
}

// deniedEvent is the access.denied event of a refused call (auditDenied).
func (a *api) deniedEvent(r *http.Request, p store.Principal, err error, status int) audit.Event {
	var le *policy.LimitError
	// The path is recorded percent-encoded, and a name or id from it only
	// when it has the form of one: they are the caller's text, and a
	// principal without any role must not be able to plant escape
	// sequences, newlines or bidirectional overrides in the trail.
	// Both are bounded too: the message may quote what the caller sent (a
	// name of a megabyte in the path), and every distinct refusal is a row.
	e := audit.Event{At: a.Now(), Actor: p.Name(), ClientAddr: a.clientAddr(r).String(), Action: audit.AccessDenied,
		Reason:  text.Sanitize(err.Error(), policy.MaxReasonLen),
		Details: map[string]any{"method": r.Method, "path": text.Sanitize(r.URL.EscapedPath(), maxAuditPath), "status": status}}
	if id := r.PathValue("id"); requestID.MatchString(id) {
		e.RequestID = id
	}
	if name := r.PathValue("name"); name != "" && policy.ValidateTargetName(name) == nil {
		e.Target = name
	}
	if errors.As(err, &le) {
		e.Action, e.Target = audit.RequestRefused, le.Target
		e.Details["limit"], e.Details["max"] = le.Limit, le.Max
	}
	return e
}

// recordDenied writes a refusal's event, through the refusal log when there
// is one (identical refusals are counted, not written each).
func (a *api) recordDenied(r *http.Request, e audit.Event) {
	if a.Refusals != nil {
		a.Refusals.Record(r.Context(), e)
		return
	}
	if err := a.Store.Audit(r.Context(), e); err != nil {
		a.Logger.Error("auditing a refused attempt", "err", err)
	}
}

// wholeTrailReader admits principals whose roles read the audit trail
// everywhere: for answers about every target whatever the query names
// (/metrics, /audit/verify). auditReader would take ?target= for a scope
// these answers do not keep to.
func (a *api) wholeTrailReader(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p store.Principal) error {
		if err := a.require(r.Context(), p, authz.ReadAudit, nil); err != nil {
			return err
		}
		return h(w, r, p)
	}
}

// auditReader admits principals whose roles read the audit trail: of the
// target named by ?target= when there is one, else of the whole
// installation. Only for handlers that keep to that target (the listing and
// the export filter by it).
func (a *api) auditReader(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p store.Principal) error {
		var t *authz.Target
		if name := r.URL.Query().Get("target"); name != "" {
			t = a.targetOf(r.Context(), name)
		}
		if err := a.require(r.Context(), p, authz.ReadAudit, t); err != nil {
			return err
		}
		return h(w, r, p)
	}
}

func (a *api) whoami(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return err
	}
	bi := buildinfo.Get()
	out := wire.Whoami{Subject: p.Name(), Kind: p.Kind, Groups: p.Groups, ClientAddr: a.clientAddr(r).String(), Grants: []wire.Grant{},
		Server: &wire.ServerBuild{Version: bi.Version, Commit: bi.Commit, Go: bi.Go}}
	for _, g := range authz.Grants(bs, p.Authz()) {
		out.Grants = append(out.Grants, wire.Grant{Role: string(g.Role), Scope: string(g.Scope)})
	}
	// Someone with no role can do nothing yet: say whom to ask (the
	// principals bound as admin everywhere). Only they are told, and only
	// people: a service account's token has nobody to read the answer, and
	// one that leaked should not name whom to phish next. Only people and
	// groups are named: a service account is nobody to ask, and its name
	// would tell a newcomer which token is worth stealing.
	if len(out.Grants) == 0 && p.Kind != store.KindService {
		for _, b := range bs {
			if b.Role == authz.Admin && b.Scope == authz.Everywhere && !strings.HasPrefix(b.Principal, "service:") && !slices.Contains(out.Admins, b.Principal) {
				out.Admins = append(out.Admins, b.Principal)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) decide(approve bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p store.Principal) error {
		var in wire.Decide
		if r.ContentLength != 0 {
			if err := decode(w, r, &in); err != nil {
				return err
			}
		}
		if err := policy.CheckReason(strings.TrimSpace(in.Reason)); err != nil {
			return err
		}
		id := r.PathValue("id")
		req, err := a.Store.GetRequest(r.Context(), id)
		if err != nil {
			return err
		}
		// Judged by its target as it was when the request was made
		// (targetAt): a namesake created since neither admits its
		// approvers nor adds its rules' groups.
		var cur *store.Target
		at := a.targetAt(r.Context(), req.Target, req.CreatedAt, &cur)
		if err := a.require(r.Context(), p, authz.Approve, at); err != nil {
			return err
		}
		actor := a.actor(r, p)
		// Recorded with an approval: a scheduled request's start asks
		// again whether this approver still may (store.StartScheduled).
		actor.Subject = p.Authz()
		reason := strings.TrimSpace(in.Reason)
		// The groups the approver is checked for: the request's own and
		// those its target's rules ask for now (a rule tightened while the
		// request waits binds it: store.ApproveRequest).
		var groups []string
		for _, g := range req.ApprovalGroups {
			groups = append(groups, g.From)
		}
		if tg := targetThen(cur, req.Target, req.CreatedAt); tg != nil && tg.Policy != nil {
			for _, g := range tg.Policy.ApprovalGroupsRequired(req.Ports) {
				groups = append(groups, g.From)
			}
		}
		if approve && len(groups) > 0 {
			bs, err := a.Store.ListBindings(r.Context())
			if err != nil {
				return err
			}
			for _, g := range groups {
				if !slices.Contains(actor.Member, g) && authz.Holds(bs, p.Authz(), g, at) {
					actor.Member = append(actor.Member, g)
				}
			}
		}
		if approve {
			req, err = a.Store.ApproveRequestWith(r.Context(), actor, id, reason, in.Version, a.Now(), store.ApproveOptions{Limits: &a.Limits})
		} else {
			req, err = a.Store.DenyRequest(r.Context(), actor, id, reason, in.Version, a.Now())
		}
		if err != nil {
			return err
		}
		a.Hub.Notify(req.Target)
		return a.writeRequest(w, r, http.StatusOK, req)
	}
}

func parseGrant(g wire.Grant, field string) (authz.Grant, error) {
	role, err := authz.ParseRole(g.Role)
	if err != nil {
		return authz.Grant{}, invalidField(field+".role", "%v", err)
	}
	scope, err := authz.ParseScope(g.Scope)
	if err != nil {
		return authz.Grant{}, invalidField(field+".scope", "%v", err)
	}
	return authz.Grant{Role: role, Scope: scope}, nil
}

func (a *api) listBindings(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	// Keyset pages in (principal, role, scope, id) order (paging.go).
	q := r.URL.Query()
	limit, err := pageLimit(q, defaultListPage, maxListPage)
	if err != nil {
		return err
	}
	var after *authz.Binding
	if ok, err := a.readCursor(r, p, &after); err != nil {
		return err
	} else if !ok {
		after = nil
	}
	bs, err := a.Store.ListBindingsAfter(r.Context(), after, limit+1)
	if err != nil {
		return err
	}
	if len(bs) > limit {
		bs = bs[:limit]
		if err := a.setNextCursor(w, r, p, bs[limit-1]); err != nil {
			return err
		}
	}
	out := make([]wire.Binding, len(bs))
	for i, b := range bs {
		out[i] = wire.Binding{ID: b.ID, Principal: b.Principal, Role: string(b.Role), Scope: string(b.Scope)}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func parseBinding(in wire.Binding) (authz.Binding, error) {
	principal, err := authz.ParsePrincipal(in.Principal)
	if err != nil {
		return authz.Binding{}, invalidField("principal", "%v", err)
	}
	g, err := parseGrant(wire.Grant{Role: in.Role, Scope: in.Scope}, "binding")
	if err != nil {
		return authz.Binding{}, err
	}
	return authz.Binding{Principal: principal, Role: g.Role, Scope: g.Scope}, nil
}

func (a *api) createBinding(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.Binding
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	b, err := parseBinding(in)
	if err != nil {
		return err
	}
	if b, err = a.Store.CreateBinding(r.Context(), a.actor(r, p), b, a.Now()); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wire.Binding{ID: b.ID, Principal: b.Principal, Role: string(b.Role), Scope: string(b.Scope)})
	return nil
}

func (a *api) deleteBinding(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.Binding
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	b, err := parseBinding(in)
	if err != nil {
		return err
	}
	if err := a.Store.DeleteBinding(r.Context(), a.actor(r, p), b, a.Now()); err != nil {
		return err
	}
	// A principal that lost the role that uses grants keeps no tunnel.
	a.sessions.credentialsChanged()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func toWireToken(t store.TokenInfo) wire.Token {
	out := wire.Token{ID: t.ID, Kind: t.Kind, Subject: t.Subject, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, CreatedBy: t.CreatedBy, Parent: t.Parent}
	for _, g := range t.Limits {
		out.Limits = append(out.Limits, wire.Grant{Role: string(g.Role), Scope: string(g.Scope)})
	}
	return out
}

// createToken makes a personal token of the caller, never wider than the
// caller's own grants, or (for admins) a service token, or a personal token
// of another user (impersonation: only without single sign-on, and audited
// as such).
//
// A caller's own token derives from the token that asked (its parent): it
// never outlives it and is revoked with it. A longer TTL is capped, and the
// answer's note says so, rather than refused: the caller asked for "a token
// for as long as possible up to TTL", and the expiry in the answer is the
// truth. So a personal token made with a single sign-on session keeps the
// session's groups only as long as the session would have lived.
func (a *api) createToken(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.TokenCreate
	if err := decode(w, r, &in); err != nil {
		return err
	}
	ttl := time.Duration(in.TTL)
	if ttl <= 0 || ttl > maxTokenTTL {
		return invalidField("ttl", "must be a positive duration of at most %s, such as 720h", maxTokenTTL)
	}
	if err := text.CheckLen(in.Name, maxTokenName); err != nil {
		return invalidField("name", "%v", err)
	}
	var limits []authz.Grant
	for i, g := range in.Limits {
		lg, err := parseGrant(g, fmt.Sprintf("limits[%d]", i))
		if err != nil {
			return err
		}
		limits = append(limits, lg)
	}
	spec := store.TokenSpec{Kind: store.KindPersonal, Subject: p.Subject, Name: in.Name, Groups: p.Groups, Limits: limits, TTL: ttl, Parent: p.TokenID}
	owner := p.Authz()
	if in.Service != "" {
		if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
			return err
		}
		name, err := authz.ParsePrincipal("service:" + in.Service)
		if err != nil {
			return invalidField("service", "%v", err)
		}
		spec.Kind, spec.Subject, spec.Groups = store.KindService, strings.TrimPrefix(name, "service:"), nil
		spec.Parent, spec.CreatedWith = "", p.TokenID
		owner = authz.Subject{Principals: []string{name}}
	} else if in.User != "" {
		if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
			return err
		}
		if a.SSO != nil {
			return fmt.Errorf("single sign-on is configured: people get their own tokens by signing in (jitgate login, then jitgate token create), and nobody may issue tokens in their name: %w", errForbidden)
		}
		name, err := authz.ParsePrincipal("user:" + in.User)
		if err != nil {
			return invalidField("user", "%v", err)
		}
		spec.Subject, spec.Groups = strings.TrimPrefix(name, "user:"), nil
		spec.Parent, spec.CreatedWith, spec.Impersonation = "", p.TokenID, true
		owner = authz.Subject{Principals: []string{name}}
	} else if p.Kind == store.KindService {
		return fmt.Errorf("a service token cannot create tokens: %w", errForbidden)
	}
	if in.User != "" && in.Service != "" {
		return invalidField("user", "give user or service, not both")
	}
	other := in.Service != "" || in.User != ""
	if len(p.Limits) > 0 && len(limits) == 0 && !other {
		// A limited token's child is at most as limited.
		spec.Limits = p.Limits
	}
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return err
	}
	if len(spec.Limits) > 0 && !other && !authz.Within(bs, p.Authz(), spec.Limits) {
		return fmt.Errorf("a token's limits must lie within your own roles: %w", errForbidden)
	}
	if len(spec.Limits) > 0 && other && !authz.Within(bs, owner, spec.Limits) {
		return invalidField("limits", "the principal has no binding for some of these roles; bind it first")
	}
	now := a.Now()
	secret, info, err := a.Store.CreateToken(r.Context(), a.actor(r, p), spec, now)
	if err != nil {
		return err
	}
	out := wire.TokenCreated{Token: toWireToken(info), Secret: secret}
	if info.ExpiresAt != nil && info.ExpiresAt.Before(now.Add(ttl).Truncate(time.Millisecond)) {
		out.Note = fmt.Sprintf("expires at %s, when the token that created it (%s) does, not after the %s asked for: a token never outlives the token it was made with",
			info.ExpiresAt.UTC().Format(time.RFC3339), info.Parent, ttl)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// listTokens lists the caller's own tokens (same owner: kind and name), or
// with ?all=true everyone's (admin).
func (a *api) listTokens(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	owner := p.Owner()
	filter := &owner
	if r.URL.Query().Get("all") == "true" {
		if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
			return err
		}
		filter = nil
	}
	// Keyset pages in creation order (paging.go).
	q := r.URL.Query()
	limit, err := pageLimit(q, defaultListPage, maxListPage)
	if err != nil {
		return err
	}
	var after *store.TokenKey
	if ok, err := a.readCursor(r, p, &after); err != nil {
		return err
	} else if !ok {
		after = nil
	}
	ts, err := a.Store.ListTokensAfter(r.Context(), filter, a.Now(), after, limit+1)
	if err != nil {
		return err
	}
	if len(ts) > limit {
		ts = ts[:limit]
		if err := a.setNextCursor(w, r, p, store.TokenKey{CreatedAt: ts[limit-1].CreatedAt, ID: ts[limit-1].ID}); err != nil {
			return err
		}
	}
	out := make([]wire.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, toWireToken(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeToken revokes one of the caller's own tokens, or (for admins) anyone's.
// Authorization comes before existence: a principal that may not manage
// access gets the same 403 for another user's token as for an id that
// does not exist, so token ids cannot be probed (as targetFor does for
// target names).
func (a *api) revokeToken(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	id := r.PathValue("id")
	t, err := a.Store.GetToken(r.Context(), id, a.Now())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil || t.Owner() != p.Owner() {
		if rerr := a.require(r.Context(), p, authz.ManageAccess, nil); rerr != nil {
			return rerr
		}
	}
	if err != nil {
		return err
	}
	if _, err := a.Store.RevokeToken(r.Context(), a.actor(r, p), id, a.Now()); err != nil {
		return err
	}
	// Tunnels opened with it (or with a token derived from it) end now.
	a.sessions.credentialsChanged()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
