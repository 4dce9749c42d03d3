package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// maxLongPoll bounds how long a client may ask a request long-poll to wait.
const maxLongPoll = 55 * time.Second

func (a *api) createTarget(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.TargetCreate
	if err := decode(w, r, &in); err != nil {
		return err
	}
	t, token, err := a.Store.CreateTarget(r.Context(), a.actor(r, p), in.Name, in.Labels, a.Now(), a.EnrollTokenTTL)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wire.TargetCreated{Target: toWireTarget(t), EnrollToken: token, EnrollExpiresAt: a.Now().Add(a.EnrollTokenTTL).UTC()})
	return nil
}

func (a *api) listTargets(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	ts, err := a.Store.ListTargets(r.Context())
	if err != nil {
		return err
	}
	out := make([]wire.Target, len(ts))
	for i, t := range ts {
		out[i] = toWireTarget(t)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) getTarget(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	t, err := a.Store.GetTarget(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWireTarget(t))
	return nil
}

func (a *api) removeTarget(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.Store.RemoveTarget(r.Context(), a.actor(r, p), r.PathValue("name"), a.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) setPolicy(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.Policy
	if err := decode(w, r, &in); err != nil {
		return err
	}
	pol, err := fromWirePolicy(in)
	if err != nil {
		return err
	}
	if pol, err = a.Limits.Normalize(pol); err != nil {
		return err
	}
	name := r.PathValue("name")
	changed, err := a.Store.SetPolicy(r.Context(), a.actor(r, p), name, pol, a.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.PolicyResult{Target: name, Changed: changed, Policy: toWirePolicy(pol)})
	return nil
}

func (a *api) getPolicy(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	t, err := a.Store.GetTarget(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	if t.Policy == nil {
		return notFound("target %q has no JIT policy", t.Name)
	}
	writeJSON(w, http.StatusOK, toWirePolicy(*t.Policy))
	return nil
}

func (a *api) removePolicy(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.Store.RemovePolicy(r.Context(), a.actor(r, p), r.PathValue("name"), a.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) createRequest(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.RequestCreate
	if err := decode(w, r, &in); err != nil {
		a.Metrics.Requests.WithLabelValues("invalid").Inc()
		return err
	}
	req, err := a.parseRequest(r, in)
	if err != nil {
		a.Metrics.Requests.WithLabelValues("invalid").Inc()
		return err
	}
	created, err := a.Store.CreateRequest(r.Context(), a.actor(r, p), in.Target, req, a.Limits, a.Now())
	if err != nil {
		a.Metrics.Requests.WithLabelValues(outcome(err)).Inc()
		return err
	}
	a.Metrics.Requests.WithLabelValues("created").Inc()
	return a.writeRequest(w, r, http.StatusCreated, created)
}

// parseRequest turns the wire form into the domain form, resolving my-ip.
func (a *api) parseRequest(r *http.Request, in wire.RequestCreate) (policy.Request, error) {
	if in.Target == "" {
		return policy.Request{}, invalidField("target", "required")
	}
	out := policy.Request{Duration: time.Duration(in.Duration), Reason: strings.TrimSpace(in.Reason)}
	if len(in.Ports) == 0 {
		return policy.Request{}, invalidField("ports", "name at least one port, such as \"22\" or \"3389/tcp\"")
	}
	if len(in.Ports) > 64 {
		return policy.Request{}, invalidField("ports", "at most 64 ports in one request")
	}
	for i, s := range in.Ports {
		port, err := policy.ParsePort(s)
		if err != nil {
			return policy.Request{}, invalidField("ports["+strconv.Itoa(i)+"]", "%v", err)
		}
		out.Ports = append(out.Ports, port)
	}
	if in.Duration == 0 {
		return policy.Request{}, invalidField("duration", "required, such as \"1h\"")
	}
	switch src := strings.TrimSpace(in.Source); src {
	case "", "my-ip":
		addr := a.clientAddr(r)
		if !addr.IsValid() {
			return policy.Request{}, invalidField("source", "cannot tell your address; name the source explicitly")
		}
		out.Source, _ = policy.ParsePrefix(addr.String())
	default:
		pfx, err := policy.ParsePrefix(src)
		if err != nil {
			return policy.Request{}, invalidField("source", "%q is not my-ip, an address or a CIDR prefix", src)
		}
		out.Source = pfx
	}
	return out, nil
}

func outcome(err error) string {
	switch err.(type) {
	case *policy.DenyError:
		return "refused"
	case *policy.FieldError:
		return "invalid"
	}
	return "error"
}

func (a *api) writeRequest(w http.ResponseWriter, r *http.Request, status int, req store.Request) error {
	var addrs []string
	if t, err := a.Store.GetTarget(r.Context(), req.Target); err == nil {
		addrs = t.Addresses
	}
	writeJSON(w, status, toWireRequest(req, addrs))
	return nil
}

func (a *api) listRequests(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	f := store.RequestFilter{Target: q.Get("target"), Requester: q.Get("requester")}
	if s := q.Get("state"); s != "" {
		st := access.State(s)
		if !validState(st) {
			return invalidField("state", "%q is not one of pending, active, expired, revoked, failed, superseded", s)
		}
		f.States = append(f.States, st)
	}
	if q.Get("active") == "true" {
		f.States = append(f.States, access.Pending, access.Active)
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return invalidField("limit", "must be a number from 1 to 10000")
		}
		f.Limit = n
	}
	rs, err := a.Store.ListRequests(r.Context(), f)
	if err != nil {
		return err
	}
	addrs := map[string][]string{}
	out := make([]wire.Request, len(rs))
	for i, req := range rs {
		if _, ok := addrs[req.Target]; !ok {
			if t, err := a.Store.GetTarget(r.Context(), req.Target); err == nil {
				addrs[req.Target] = t.Addresses
			}
		}
		out[i] = toWireRequest(req, addrs[req.Target])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func validState(s access.State) bool {
	for _, v := range access.States {
		if v == s {
			return true
		}
	}
	return false
}

// getRequest returns a request; with ?wait=D&state=S it is a long-poll that
// answers once the state differs from S (or after D).
func (a *api) getRequest(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxLongPoll {
			return invalidField("wait", "must be a duration from 0s to %s", maxLongPoll)
		}
		wait = d
	}
	deadline := time.Now().Add(wait)
	for {
		req, err := a.Store.GetRequest(r.Context(), id)
		if err != nil {
			return err
		}
		remaining := time.Until(deadline)
		if wait == 0 || string(req.State) != q.Get("state") || remaining <= 0 || r.Context().Err() != nil {
			return a.writeRequest(w, r, http.StatusOK, req)
		}
		ch := a.Hub.Watch(req.Target)
		// Re-read after taking the channel so a change in between is seen.
		if again, err := a.Store.GetRequest(r.Context(), id); err == nil && again.State != req.State {
			continue
		}
		waitFor(r.Context(), ch, remaining)
	}
}

func (a *api) revokeRequest(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.Revoke
	if r.ContentLength != 0 {
		if err := decode(w, r, &in); err != nil {
			return err
		}
	}
	if len(in.Reason) > policy.MaxReasonLen {
		return invalidField("reason", "at most %d characters", policy.MaxReasonLen)
	}
	req, err := a.Store.RevokeRequest(r.Context(), a.actor(r, p), r.PathValue("id"), strings.TrimSpace(in.Reason), a.Now())
	if err != nil {
		return err
	}
	return a.writeRequest(w, r, http.StatusOK, req)
}

func (a *api) listAudit(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	f := store.AuditFilter{Target: q.Get("target"), RequestID: q.Get("request"), Action: q.Get("action")}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return invalidField("since", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		f.Since = t
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return invalidField("after", "must be an event id")
		}
		f.AfterID = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return invalidField("limit", "must be a number from 1 to 10000")
		}
		f.Limit = n
	}
	es, err := a.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]wire.AuditEvent, len(es))
	for i, e := range es {
		out[i] = toWireAudit(e)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
