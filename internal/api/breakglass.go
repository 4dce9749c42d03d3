package api

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// Break-glass endpoints (access.CheckBreakGlass, access.Token): online
// opening by the breakglass role, the alerts it raises and their review,
// offline tokens (issue, list, revoke) and the agents' reports of their
// offline uses.

// maxTokenLifetime bounds how long an offline token may stay valid.
const maxTokenLifetime = 400 * 24 * time.Hour

// errNoBreakGlassKey answers the token endpoints of a server started without
// a break-glass key.
var errNoBreakGlassKey = errors.New("this server has no break-glass signing key")

func (a *api) breakGlassCap() time.Duration {
	if a.BreakGlassMax > 0 {
		return a.BreakGlassMax
	}
	return access.DefaultBreakGlassMax
}

// openBreakGlass opens access without approvers for a principal holding
// the breakglass role on the target, within the rule's limits and the
// server's cap, with a mandatory reason.
func (a *api) openBreakGlass(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.BreakGlassCreate
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := access.CheckBreakGlass(in.Reason, time.Duration(in.Duration), a.breakGlassCap()); err != nil {
		return err
	}
	if in.Source == "" {
		in.Source = "my-ip"
	}
	req, err := a.parseRequest(r, wire.RequestCreate{Target: in.Target, Ports: in.Ports, Source: in.Source, Duration: in.Duration, Reason: in.Reason})
	if err != nil {
		return err
	}
	t, err := a.targetFor(r.Context(), p, authz.BreakGlass, in.Target)
	if err != nil {
		return err
	}
	if err := checkSourceFamily(t, req.Source); err != nil {
		return err
	}
	created, alert, err := a.Store.OpenBreakGlass(r.Context(), a.actor(r, p), in.Target, req, a.Limits, a.Now())
	if err != nil {
		return err
	}
	a.Logger.Warn("break-glass opened", "actor", p.Name(), "target", in.Target, "request", created.ID, "alert", alert.ID)
	out := wire.BreakGlassOpened{Request: toWireRequest(created), Alert: toWireAlert(alert)}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func toWireAlert(a store.BreakGlassAlert) wire.BreakGlassAlert {
	out := wire.BreakGlassAlert{ID: a.ID, At: a.At, Kind: a.Kind, Actor: a.Actor, Target: a.Target, RequestID: a.RequestID, TokenID: a.TokenID,
		Source: a.Source, Ports: []string{}, Duration: wire.Duration(a.Duration), Reason: a.Reason, ReviewedAt: a.ReviewedAt,
		ReviewedBy: a.ReviewedBy, ReviewNote: a.ReviewNote}
	var ports []policy.Port
	if json.Unmarshal([]byte(a.Ports), &ports) == nil {
		for _, p := range ports {
			out.Ports = append(out.Ports, p.String())
		}
	} else {
		_ = json.Unmarshal([]byte(a.Ports), &out.Ports)
	}
	return out
}

// listAlerts lists break-glass alerts (?open=true: not reviewed yet) to
// those who read the whole audit trail, or (?target=NAME) that target's
// alerts only to those who read its audit trail (auditReader checked it:
// the list must then be kept to that target, or a scoped auditor read
// every target's alerts; and to the parts of its history the reader's
// roles cover, readableSpans, or an auditor of today's prod target read
// the alerts of the dev target of that name, from before).
func (a *api) listAlerts(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	open, target := r.URL.Query().Get("open") == "true", r.URL.Query().Get("target")
	as, err := a.Store.BreakGlassAlerts(r.Context(), open, target)
	if err != nil {
		return err
	}
	if target != "" {
		// As in the audit listing (keepToScope): a reader admitted by the
		// labels of today's target sees the alerts raised while a target
		// of that name had labels its roles cover, not a namesake's.
		all, spans, err := a.readableSpans(r.Context(), p, target)
		if err != nil {
			return err
		}
		if !all {
			as = slices.DeleteFunc(as, func(x store.BreakGlassAlert) bool {
				return !slices.ContainsFunc(spans, func(sp lifeSpan) bool { return sp.covers(x.At) })
			})
		}
	}
	out := make([]wire.BreakGlassAlert, 0, len(as))
	for _, x := range as {
		out = append(out, toWireAlert(x))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// reviewAlert marks an alert reviewed: auditors and admins only, audited.
func (a *api) reviewAlert(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ReviewAlerts, nil); err != nil {
		return err
	}
	var in wire.AlertReview
	if r.ContentLength != 0 {
		if err := decode(w, r, &in); err != nil {
			return err
		}
	}
	in.Note = strings.TrimSpace(in.Note)
	if err := policy.CheckReason(in.Note); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !strings.HasPrefix(id, "bga-") || len(id) > 64 || text.Check(id) != nil {
		return invalidField("id", "not a break-glass alert id")
	}
	got, err := a.Store.ReviewBreakGlassAlert(r.Context(), a.actor(r, p), id, in.Note, a.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWireAlert(got))
	return nil
}

func toWireBGToken(t store.BreakGlassToken) wire.BreakGlassToken {
	return wire.BreakGlassToken{ID: t.ID, Targets: t.Targets, Ports: t.Ports, MaxDuration: wire.Duration(t.MaxDuration), IssuedAt: t.IssuedAt,
		IssuedBy: t.IssuedBy, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, RevokedBy: t.RevokedBy, UsedAt: t.UsedAt, UsedTarget: t.UsedTarget}
}

// issueBreakGlassToken signs an offline token (admins: access.manage),
// records what it covers (never its text) and answers the text once.
func (a *api) issueBreakGlassToken(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	if len(a.BreakGlassKey) != ed25519.PrivateKeySize {
		return errNoBreakGlassKey
	}
	var in wire.BreakGlassTokenCreate
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if len(in.Targets) == 0 || len(in.Targets) > 100 {
		return invalidField("targets", "name 1 to 100 targets")
	}
	for i, name := range in.Targets {
		if policy.ValidateTargetName(name) != nil {
			return invalidField(fmt.Sprintf("targets[%d]", i), "%q is not a target name", text.Sanitize(name, 80))
		}
		// Existing targets only: a target created later under a name a
		// token names is not the one it was issued for, and its desired
		// state lists such tokens as revoked.
		if _, err := a.Store.GetTarget(r.Context(), name); errors.Is(err, store.ErrNotFound) {
			return invalidField(fmt.Sprintf("targets[%d]", i), "no target is named %s (a token is issued for existing targets)", name)
		} else if err != nil {
			return err
		}
	}
	if len(in.Ports) == 0 || len(in.Ports) > 64 {
		return invalidField("ports", "name 1 to 64 ports such as 22/tcp")
	}
	ports := make([]string, 0, len(in.Ports))
	for i, s := range in.Ports {
		port, err := policy.ParsePort(s)
		if err != nil {
			return invalidField(fmt.Sprintf("ports[%d]", i), "%v", err)
		}
		if !slices.Contains(ports, port.String()) {
			ports = append(ports, port.String())
		}
	}
	if in.MaxDuration <= 0 || time.Duration(in.MaxDuration) > 24*time.Hour {
		return invalidField("max_duration", "must be between 1s and 24h")
	}
	if in.Expires <= 0 || time.Duration(in.Expires) > maxTokenLifetime {
		return invalidField("expires", "must be between 1s and %s", maxTokenLifetime)
	}
	now := a.Now().UTC()
	tok := access.Token{ID: random.ID("bgt-", 10), Targets: slices.Compact(slices.Sorted(slices.Values(in.Targets))), Ports: ports,
		MaxDuration: time.Duration(in.MaxDuration), IssuedAt: now, ExpiresAt: now.Add(time.Duration(in.Expires)), IssuedBy: p.Name()}
	textTok, err := tok.Sign(a.BreakGlassKey)
	if err != nil {
		return err
	}
	if err := a.Store.IssueBreakGlassToken(r.Context(), a.actor(r, p), tok); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wire.BreakGlassTokenCreated{Token: toWireBGToken(store.BreakGlassToken{Token: tok}), Text: textTok})
	return nil
}

// canSeeTokens admits admins and auditors.
func (a *api) canSeeTokens(ctx context.Context, p store.Principal) error {
	if ok, err := a.can(ctx, p, authz.ReadAudit, nil); err != nil || ok {
		return err
	}
	return a.require(ctx, p, authz.ManageAccess, nil)
}

func (a *api) listBreakGlassTokens(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.canSeeTokens(r.Context(), p); err != nil {
		return err
	}
	ts, err := a.Store.BreakGlassTokens(r.Context())
	if err != nil {
		return err
	}
	out := make([]wire.BreakGlassToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, toWireBGToken(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) revokeBreakGlassToken(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !strings.HasPrefix(id, "bgt-") || len(id) > 64 || text.Check(id) != nil {
		return invalidField("id", "not a break-glass token id")
	}
	t, err := a.Store.RevokeBreakGlassToken(r.Context(), a.actor(r, p), id, a.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWireBGToken(t))
	return nil
}

// breakGlassUse records an offline use an agent reports once the server is
// reachable again. The agent sends the token's text; the server verifies it
// against its own key and checks that it names the reporting target (an
// agent cannot report uses on another target's behalf), but not its expiry
// or reuse: the access happened, so it is recorded whatever, with the
// anomaly in the audit details.
func (a *api) breakGlassUse(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	target := p.Subject
	var in wire.BreakGlassUse
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if len(a.BreakGlassKey) != ed25519.PrivateKeySize {
		return errNoBreakGlassKey
	}
	tok, err := access.VerifyToken(in.Token, a.BreakGlassKey.Public().(ed25519.PublicKey))
	verified := err == nil
	if errors.Is(err, access.ErrTokenSignature) {
		// The agent opened with a token its persisted key verified and
		// this server's does not (the server's key changed, or the host's
		// key file was replaced): the access happened, so it is recorded,
		// unverified, with the anomaly; the token is not marked used. A
		// 422 made the agent mark the use refused: never audited.
		tok, err = access.ReadTokenUnverified(in.Token)
	}
	if err != nil {
		return err
	}
	if !slices.Contains(tok.Targets, target) {
		return invalidField("token", "token %s does not name this target", tok.ID)
	}
	if in.Protocol != "tcp" && in.Protocol != "udp" || in.Port == 0 {
		return invalidField("port", "a port and tcp or udp")
	}
	src, err := policy.ParsePrefix(in.Source)
	if err != nil {
		return invalidField("source", "not an address or prefix")
	}
	if in.Duration <= 0 || time.Duration(in.Duration) > 24*time.Hour {
		return invalidField("duration", "out of range")
	}
	// The reason and operator are what the host's operator typed and
	// sudo said: made inert, never refused. A refusal made the agent mark
	// the use as refused and never report it, so a token holder could hide
	// a use from the audit trail with a tab in the reason.
	u := store.BreakGlassUse{TokenID: tok.ID, Operator: text.Sanitize(in.Operator, 64), Source: src.String(), Port: in.Port, Protocol: in.Protocol,
		Duration: time.Duration(in.Duration), Reason: text.Sanitize(in.Reason, policy.MaxReasonLen), UsedAt: in.UsedAt, Verified: verified}
	alert, fresh, err := a.Store.RecordBreakGlassUse(r.Context(), target, u, a.Now())
	if err != nil {
		return err
	}
	if fresh {
		a.Logger.Warn("offline break-glass reported", "target", target, "token", tok.ID, "alert", alert.ID)
	}
	writeJSON(w, http.StatusOK, toWireAlert(alert))
	return nil
}

// breakGlassState adds the break-glass key and the revocations for target
// to a desired state (snapshot or delta alike).
func (a *api) breakGlassState(ctx context.Context, t store.Target, ds *wire.DesiredState, now time.Time) error {
	if len(a.BreakGlassKey) != ed25519.PrivateKeySize {
		return nil
	}
	ds.BreakGlassKey = base64.StdEncoding.EncodeToString(a.BreakGlassKey.Public().(ed25519.PublicKey))
	revoked, err := a.Store.RevokedBreakGlassTokensOf(ctx, t, now)
	if err != nil {
		return err
	}
	ds.BreakGlassRevoked = revoked
	return nil
}
