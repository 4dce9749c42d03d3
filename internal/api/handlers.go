package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/inventory"
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
	if in.Gateway != "" {
		if err := policy.ValidateTargetName(in.Gateway); err != nil {
			return invalidField("gateway", "%s", strings.TrimPrefix(err.Error(), "name: "))
		}
	}
	if err := a.require(r.Context(), p, authz.WriteTarget, &authz.Target{Name: in.Name, Labels: in.Labels}); err != nil {
		return err
	}
	t, token, err := a.createTargetSpec(r.Context(), r, p, in)
	if err != nil {
		return err
	}
	out := wire.TargetCreated{Target: a.view(r.Context(), t, nil, nil), EnrollToken: token}
	if token != "" {
		out.EnrollExpiresAt = a.Now().Add(a.EnrollTokenTTL).UTC()
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// Paging of the targets and requests lists (paging.go): a page of at most
// maxListPage (default defaultListPage); visibility, class and selector are
// decided after the SQL, so a page reads at most listScan rows and may come
// back short, with a next link.
const (
	defaultListPage = 1000
	maxListPage     = 10000
	listScan        = 20000
)

// listTargets lists the targets p may read by name, a page at a time:
// ?state= keeps one class, ?selector=env=prod,team=db those whose labels
// match (policy.ParseSelector), ?limit= and ?cursor= page.
func (a *api) listTargets(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	class := q.Get("state")
	if class != "" && !slices.Contains(inventory.Classes, class) {
		return invalidField("state", "%q is not one of configured, not-configured, unsupported", class)
	}
	sel, err := parseSelector(q.Get("selector"))
	if err != nil {
		return err
	}
	limit, err := pageLimit(q, defaultListPage, maxListPage)
	if err != nil {
		return err
	}
	var after string
	if _, err := a.readCursor(r, p, &after); err != nil {
		return err
	}
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return err
	}
	// The page's targets: read in batches after the cursor until the page
	// is full, the table ends or listScan rows were read.
	var ts []store.Target
	more := false
	for scanned, budget := 0, a.scanBudget(listScan); len(ts) < limit && scanned < budget; {
		// One row more than the page: a page that ends the table has no
		// next link.
		n := limit + 1
		batch, err := a.Store.ListTargetsAfter(r.Context(), after, n)
		if err != nil {
			return err
		}
		for i, t := range batch {
			after = t.Name
			scanned++
			if authz.Allowed(bs, p.Authz(), authz.ReadTarget, authzTarget(t)) && sel.Matches(t.Labels) {
				ts = append(ts, t)
			}
			if len(ts) == limit {
				more = i < len(batch)-1 || len(batch) == n
				break
			}
		}
		if len(ts) == limit {
			break
		}
		// A full batch may have more behind it.
		if more = len(batch) == n; !more {
			break
		}
	}
	byName := make(map[string]store.Target, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	active, err := a.Store.ActiveCounts(r.Context())
	if err != nil {
		return err
	}
	// Blocked counters per (gate, destination), one query for the whole list.
	type gateDest struct{ gate, dest string }
	blocked := map[gateDest][]wire.BlockedCounter{}
	rows, err := a.Store.AllBlocked(r.Context())
	if err != nil {
		return err
	}
	for _, b := range rows {
		k := gateDest{b.Target, b.Destination}
		blocked[k] = append(blocked[k], toWireCounter(b.BlockedCounter))
	}
	stats, err := a.Store.AllTargetStats(r.Context(), a.Now())
	if err != nil {
		return err
	}
	out := make([]wire.Target, 0, len(ts))
	for _, t := range ts {
		wt := a.view(r.Context(), t, byName, active)
		if class != "" && wt.Class != class {
			continue
		}
		wt.Stats = toWireStats(stats[t.Name])
		var cs []wire.BlockedCounter
		if t.Gateway == "" {
			cs = blocked[gateDest{t.Name, ""}]
		}
		for _, a := range t.BehindAddresses() {
			cs = append(cs, blocked[gateDest{t.Gateway, a}]...)
		}
		if len(cs) > 0 {
			wt.Blocked = &wire.Blocked{Counters: cs, TopSources: []wire.BlockedSource{}}
		}
		out = append(out, wt)
	}
	if more {
		if err := a.setNextCursor(w, r, p, after); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) getTarget(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	t, err := a.targetFor(r.Context(), p, authz.ReadTarget, r.PathValue("name"))
	if err != nil {
		return err
	}
	stats, err := a.Store.TargetStats(r.Context(), t.Name, a.Now())
	if err != nil {
		return err
	}
	active, err := a.Store.ActiveCounts(r.Context())
	if err != nil {
		return err
	}
	out := a.view(r.Context(), t, nil, active)
	out.Stats = toWireStats(stats)
	out.Blocked = a.blockedOf(r.Context(), t, a.Now())
	if t.Gateway != "" {
		ms, err := a.Store.Mappings(r.Context(), t.Name, false)
		if err != nil {
			return err
		}
		out.Mappings = toWireMappings(ms)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) removeTarget(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if _, err := a.targetFor(r.Context(), p, authz.WriteTarget, r.PathValue("name")); err != nil {
		return err
	}
	if err := a.Store.RemoveTarget(r.Context(), a.actor(r, p), r.PathValue("name"), a.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// reissueEnrollToken issues a new enrollment token for an existing target
// (its host is re-enrolled without removing the target): the same right as
// adding or removing it.
func (a *api) reissueEnrollToken(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	t, err := a.targetFor(r.Context(), p, authz.WriteTarget, r.PathValue("name"))
	if err != nil {
		return err
	}
	now := a.Now()
	token, err := a.Store.ReissueEnrollToken(r.Context(), a.actor(r, p), t.Name, now, a.EnrollTokenTTL)
	if err != nil {
		return err
	}
	t, err = a.Store.GetTarget(r.Context(), t.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wire.TargetCreated{Target: a.view(r.Context(), t, nil, nil), EnrollToken: token,
		EnrollExpiresAt: now.Add(a.EnrollTokenTTL).UTC()})
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
	t, err := a.targetFor(r.Context(), p, authz.WritePolicy, name)
	if err != nil {
		return err
	}
	if pub := publishes(pol); t.Gateway != "" && len(pub) > 0 {
		if err := a.requireGatewayWrite(r.Context(), p, t.Gateway, fmt.Sprintf("publishing %s of %s on gateway %s", strings.Join(pub, ", "), name, t.Gateway)); err != nil {
			return err
		}
	}
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	// A real change names the policy it replaces (etag.go).
	pre, err := policyPrecondition(r, !dry)
	if err != nil {
		return err
	}
	res, err := a.Store.SetPolicyWith(r.Context(), a.actor(r, p), name, pol, a.Now(), store.PolicyOptions{DryRun: dry, Compare: a.Limits.Compare, Precondition: pre})
	if err != nil {
		return err
	}
	out := a.policyResult(name, res, pol, dry)
	if out.ETag = policyETag(res.Stored); out.ETag != "" {
		w.Header().Set("ETag", out.ETag)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// dryRun reads the ?dry_run= parameter: with true, the handler runs every
// check and says what it would change, and changes nothing.
func dryRun(r *http.Request) (bool, error) {
	s := r.URL.Query().Get("dry_run")
	if s == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, invalidField("dry_run", "%q must be true or false", s)
	}
	return v, nil
}

// policyResult says what setting pol did (or would do) to a target: every
// change from its previous policy, as policy.Limits.Compare judges it, and
// the ports it no longer gates.
func (a *api) policyResult(target string, res store.PolicyOutcome, pol policy.Policy, dry bool) wire.PolicyResult {
	out := wire.PolicyResult{Target: target, Changed: res.Changed, DryRun: dry, Policy: toWirePolicy(pol)}
	if res.Kept {
		return out
	}
	changes := a.Limits.Compare(res.Old, pol)
	for _, c := range changes {
		out.Changes = append(out.Changes, wire.PolicyChange{Port: c.Port.String(), Field: c.Field, From: c.From, To: c.To,
			Weaker: c.Weaker, Summary: c.String()})
	}
	for _, p := range policy.DroppedPorts(changes) {
		out.Dropped = append(out.Dropped, p.String())
	}
	return out
}

func (a *api) getPolicy(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	t, err := a.targetFor(r.Context(), p, authz.ReadTarget, r.PathValue("name"))
	if err != nil {
		return err
	}
	if t.Policy == nil {
		return notFound("target %q has no JIT policy", t.Name)
	}
	w.Header().Set("ETag", policyETag(t.Policy))
	writeJSON(w, http.StatusOK, toWirePolicy(*t.Policy))
	return nil
}

func (a *api) removePolicy(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if _, err := a.targetFor(r.Context(), p, authz.WritePolicy, r.PathValue("name")); err != nil {
		return err
	}
	// An If-Match, when sent, names the policy the caller means to remove
	// (etag.go); without one any policy is removed, as before.
	pre, err := policyPrecondition(r, false)
	if err != nil {
		return err
	}
	if err := a.Store.RemovePolicyIf(r.Context(), a.actor(r, p), r.PathValue("name"), a.Now(), pre); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// createRequest creates a request; with ?wait=D, one that is pending (its
// agent has yet to open it) is waited for up to D, as GET's long-poll with
// &state=pending would, and answered as it is then: the create and the
// client's first long-poll in one exchange. The request is created (and
// durable) whatever happens during the wait.
func (a *api) createRequest(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	began := time.Now() // Server-Timing's commit counts from here (servertiming.go)
	// Checked before anything is created.
	wait, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		a.Metrics.Requests.WithLabelValues("invalid").Inc()
		return err
	}
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
	var start time.Time
	if in.StartsAt != nil {
		if start, err = access.CheckStart(*in.StartsAt, a.Now()); err != nil {
			a.Metrics.Requests.WithLabelValues("invalid").Inc()
			return invalidField("starts_at", "%v", err)
		}
	}
	t, err := a.targetReadFor(r.Context(), p, authz.CreateRequest, in.Target, a.Store.RequestTarget)
	if errors.Is(err, errForbidden) {
		a.Metrics.Requests.WithLabelValues("forbidden").Inc()
	}
	if err != nil {
		return err
	}
	// A bastion-only request names no source: asked for explicitly, or
	// implied when no source is named and every port is reached only
	// through the bastion.
	if t.Policy != nil && (in.Bastion || (impliedSource(in.Source) && t.Policy.BastionOnly(req.Ports))) {
		req.Source = netip.Prefix{}
	} else if in.Bastion {
		a.Metrics.Requests.WithLabelValues("refused").Inc()
		return &policy.DenyError{Reason: "the target has no JIT policy"}
	}
	if req.Source.IsValid() {
		if err := checkSourceFamily(t, req.Source); err != nil {
			a.Metrics.Requests.WithLabelValues("invalid").Inc()
			return err
		}
	}
	// The hub's generation before the create commits: the agent's report
	// that opens it, however soon, wakes the wait below.
	gen := a.Hub.Gen()
	created, err := a.Store.CreateRequestWith(r.Context(), a.actor(r, p), in.Target, req, a.Limits, a.Now(),
		store.RequestOptions{Start: start, Subject: p.Authz(), Token: p.TokenID})
	if err != nil {
		a.Metrics.Requests.WithLabelValues(outcome(err)).Inc()
		return err
	}
	a.Metrics.Requests.WithLabelValues("created").Inc()
	committed := time.Now()
	if wait == 0 || created.State != access.Pending {
		setCreateTiming(w.Header(), committed.Sub(began), 0)
		return a.writeRequestOf(w, r, http.StatusCreated, created, &t)
	}
	// The create's own change is not one to wake the wait for.
	gen = a.Hub.CreatedGen(created.ID, gen)
	v, err := a.awaitRequest(r.Context(), p, store.RequestView{Request: created, Target: &t}, gen, wait,
		func(req store.Request) bool { return req.State != access.Pending })
	waited := time.Since(committed)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrUnauthorized), errors.Is(err, errForbidden), r.Context().Err() != nil:
		// The caller may no longer see it, or is gone.
		return err
	default:
		// The request is committed: a failure of the wait's read is not
		// answered as a 5xx, which says "not done, send it again" (a retry
		// would create a second request and grant). The request as last
		// read (pending) is answered; the client follows it by its id.
		// TestCreateWaitFaultAnswersTheCreated.
		a.Logger.Warn("the wait of a create failed; answering the request as last read", "request", created.ID, "err", err)
	}
	setCreateTiming(w.Header(), committed.Sub(began), waited)
	return a.writeRequestOf(w, r, http.StatusCreated, v.Request, v.Target)
}

// parseRequest turns the wire form into the domain form, resolving my-ip.
func (a *api) parseRequest(r *http.Request, in wire.RequestCreate) (policy.Request, error) {
	if in.Target == "" {
		return policy.Request{}, invalidField("target", "required")
	}
	out := policy.Request{Duration: time.Duration(in.Duration), Reason: strings.TrimSpace(in.Reason)}
	// Checked here, before the store records anything about the request.
	if err := policy.CheckReason(out.Reason); err != nil {
		return policy.Request{}, err
	}
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
	if in.Bastion && strings.TrimSpace(in.Source) != "" {
		return policy.Request{}, invalidField("source", "a bastion request names no source")
	}
	switch src := strings.TrimSpace(in.Source); {
	case in.Bastion:
		// No source: decided with the target's policy (createRequest).
	case src == "", src == "my-ip":
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

// impliedSource reports whether a request leaves its source to the server.
func impliedSource(src string) bool {
	src = strings.TrimSpace(src)
	return src == "" || src == "my-ip"
}

func outcome(err error) string {
	switch err.(type) {
	case *policy.DenyError:
		return "refused"
	case *policy.FieldError:
		return "invalid"
	case *policy.LimitError:
		return "limited"
	}
	return "error"
}

func (a *api) writeRequest(w http.ResponseWriter, r *http.Request, status int, req store.Request) error {
	return a.writeRequestOf(w, r, status, req, nil)
}

// writeRequestOf is writeRequest with req's target as this call already read
// it (nil: read it here, and only when the answer needs it): a new request
// reads its target once, not again for its answer.
//
// The connection hints are those of the target req was made on: a namesake
// created since (targetThen) gives none.
func (a *api) writeRequestOf(w http.ResponseWriter, r *http.Request, status int, req store.Request, t *store.Target) error {
	out := toWireRequest(req)
	if req.State.HoldsGrants() {
		if t == nil {
			if got, err := a.Store.GetTarget(r.Context(), req.Target); err == nil {
				t = &got
			}
		}
		if t = targetThen(t, req.Target, req.CreatedAt); t != nil {
			out.Connect = a.connectFor(r.Context(), req, *t)
		}
	}
	a.addRemoval(r.Context(), &out, req, map[string]*store.Target{})
	writeJSON(w, status, out)
	return nil
}

// addRemoval describes the removal of req's grants, if it has one, with the
// state of the agent that must confirm it (enforcers caches them by name).
func (a *api) addRemoval(ctx context.Context, out *wire.Request, req store.Request, enforcers map[string]*store.Target) {
	if req.Removal == nil {
		return
	}
	var enf *store.Target
	if name := req.RemovalEnforcer; name != "" {
		var ok bool
		if enf, ok = enforcers[name]; !ok {
			if t, err := a.Store.GetTarget(ctx, name); err == nil {
				enf = &t
			}
			enforcers[name] = enf
		}
	}
	out.Removal = toWireRemoval(*req.Removal, enf, a.Now())
	out.RemovalConfirmedAt = req.Removal.ConfirmedAt
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
	// ?selector= keeps the requests on targets whose labels match.
	sel, err := parseSelector(q.Get("selector"))
	if err != nil {
		return err
	}
	limit, err := pageLimit(q, defaultListPage, maxListPage)
	if err != nil {
		return err
	}
	var after store.RequestKey
	if ok, err := a.readCursor(r, p, &after); err != nil {
		return err
	} else if ok {
		f.After = &after
	}
	f.Limit = limit + 1 // one more than the page: see listTargets
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return err
	}
	targets := map[string]*store.Target{} // today's, by name (targetAt)
	enforcers := map[string]*store.Target{}
	out := make([]wire.Request, 0)
	more := false
	for scanned, budget := 0, a.scanBudget(listScan); len(out) < limit && scanned < budget; {
		rs, err := a.Store.ListRequests(r.Context(), f)
		if err != nil {
			return err
		}
		for i, req := range rs {
			k := store.RequestKeyOf(req)
			f.After = &k
			scanned++
			// Judged by its target as it was when the request was made
			// (targetAt): a namesake created since is not its target.
			cur := targets[req.Target]
			at := a.targetAt(r.Context(), req.Target, req.CreatedAt, &cur)
			targets[req.Target] = cur
			// Own requests, and others' where a role reads requests.
			if req.Requester != p.Name() && !authz.Allowed(bs, p.Authz(), authz.ReadAnyRequest, at) {
				continue
			}
			// The selector sees the labels of targets the caller may
			// read; an own request on another one matches as if its
			// target had none (its labels are not the caller's to probe),
			// as does one whose target is gone or a namesake.
			labels := at.Labels
			if !authz.Allowed(bs, p.Authz(), authz.ReadTarget, at) {
				labels = nil
			}
			if !sel.Matches(labels) {
				continue
			}
			wr := toWireRequest(req)
			if req.State.HoldsGrants() {
				t := store.Target{Name: req.Target} // gone, or a namesake's: no addresses
				if then := targetThen(cur, req.Target, req.CreatedAt); then != nil {
					t = *then
				}
				wr.Connect = a.connectFor(r.Context(), req, t)
			}
			a.addRemoval(r.Context(), &wr, req, enforcers)
			out = append(out, wr)
			if len(out) == limit {
				more = i < len(rs)-1 || len(rs) == f.Limit
				break
			}
		}
		if len(out) == limit {
			break
		}
		if more = len(rs) == f.Limit; !more {
			break
		}
	}
	if more && f.After != nil {
		if err := a.setNextCursor(w, r, p, *f.After); err != nil {
			return err
		}
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

// getRequest returns a request; with ?wait=D&state=S (or &version=V) it is a
// long-poll that answers once the state differs from S (the version from V),
// or after D.
func (a *api) getRequest(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	wait, err := parseWait(q.Get("wait"))
	if err != nil {
		return err
	}
	var version int64
	if s := q.Get("version"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return invalidField("version", "must be a request version")
		}
		version = v
	}
	changed := func(req store.Request) bool {
		if version != 0 {
			return req.Version != version
		}
		return string(req.State) != q.Get("state")
	}
	// The hub's generation before the read: a change committed after it
	// makes the wait below check at once (Hub.WatchRequest).
	gen := a.Hub.Gen()
	// The request with what of its target another's request is authorized
	// by and an answer given at once shows, in one read.
	v, err := a.Store.ReadRequestView(r.Context(), id, "", a.Now())
	if err != nil {
		return err
	}
	if err := a.mayRead(r.Context(), p, v); err != nil {
		return err
	}
	if v, err = a.awaitRequest(r.Context(), p, v, gen, wait, changed); err != nil {
		return err
	}
	return a.writeRequestOf(w, r, http.StatusOK, v.Request, v.Target)
}

// parseWait reads a long-poll's ?wait= (empty: 0, no wait).
func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxLongPoll {
		return 0, invalidField("wait", "must be a duration from 0s to %s", maxLongPoll)
	}
	return d, nil
}

// awaitRequest waits up to wait for changed(the request of v), the request
// as it was read after the hub's generation was gen (v's caller already
// authorized p for it), and returns it as it is then: changed, or at the
// deadline, or when ctx ends. Both long-polls on a request use it: GET's,
// and a create's (?wait=D on POST /api/v1/requests).
func (a *api) awaitRequest(ctx context.Context, p store.Principal, v store.RequestView, gen uint64, wait time.Duration,
	changed func(store.Request) bool) (store.RequestView, error) {
	deadline := time.Now().Add(wait)
	for {
		remaining := time.Until(deadline)
		if wait == 0 || changed(v.Request) || remaining <= 0 || ctx.Err() != nil {
			return v, nil
		}
		// Woken only when this request's version moved (or on a timeout):
		// the other requests of its target do not cost this waiter a read.
		ch, done := a.Hub.WatchRequestRow(v.Request.Target, v.Request.ID, v.Request.Version, gen)
		waitFor(ctx, ch, remaining)
		row, handed := done()
		if err := ctx.Err(); err != nil {
			// The client went away during the wait: nobody to answer, and
			// the read below would run anyway (a point read is not
			// cancelled: store pointCtx). TestAbandonedLongPollReadsNothing.
			return v, err
		}
		gen = a.Hub.Gen()
		// Authorized before the wait, answered up to a minute later: the
		// request is shown only to a caller whose token still lives and,
		// for another's request, whose roles still allow it now. The
		// request, its target and the token are one read (they were
		// three); or, for the caller's own request handed over by the
		// commit that woke the wait (the agent's report activating it),
		// its target and the token: not the target read before the wait,
		// which a commit during it may have moved (the report itself
		// records the host's addresses), so that the connection hints
		// never point where the host no longer is
		// (TestHandedOverTargetAsCommitted).
		var (
			next store.RequestView
			err  error
		)
		if handed && row.Requester == p.Name() && row.ApprovalsRequired == 0 {
			if next, err = a.Store.HandedRequestView(ctx, row, p.TokenID, a.Now()); err != nil {
				return v, err
			}
		} else if next, err = a.Store.ReadRequestView(ctx, v.Request.ID, p.TokenID, a.Now()); err != nil {
			return v, err
		}
		if p.TokenID != "" && !next.TokenLive {
			return v, fmt.Errorf("token of %s ended during the wait: %w", p.Name(), store.ErrUnauthorized)
		}
		if err := a.mayRead(ctx, p, next); err != nil {
			return v, err
		}
		v = next
	}
}

// mayRead fails with errForbidden unless p may see the request of v: its
// own, or another's in scope of a role that reads requests, judged with the
// target's labels as v read them when that target existed when the request
// was made (by its name alone when it is gone or a namesake: targetThen).
func (a *api) mayRead(ctx context.Context, p store.Principal, v store.RequestView) error {
	at := judgedBy(targetThen(v.Target, v.Request.Target, v.Request.CreatedAt), v.Request.Target)
	if ok, err := a.readable(ctx, p, v.Request, at); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s may not see request %s: %w", p.Name(), v.Request.ID, errForbidden)
	}
	return nil
}

func (a *api) revokeRequest(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.Revoke
	if r.ContentLength != 0 {
		if err := decode(w, r, &in); err != nil {
			return err
		}
	}
	if err := policy.CheckReason(strings.TrimSpace(in.Reason)); err != nil {
		return err
	}
	cur, err := a.Store.GetRequest(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if cur.Requester != p.Name() {
		if err := a.require(r.Context(), p, authz.RevokeAny, a.requestTarget(r.Context(), cur)); err != nil {
			return err
		}
	}
	req, err := a.Store.RevokeRequest(r.Context(), a.actor(r, p), cur.ID, strings.TrimSpace(in.Reason), a.Now())
	if err != nil {
		return err
	}
	return a.writeRequest(w, r, http.StatusOK, req)
}

func (a *api) listAudit(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	f, err := auditFilter(q)
	if err != nil {
		return err
	}
	if err := a.keepToScope(r.Context(), p, &f); err != nil {
		return err
	}
	limit, err := pageLimit(q, defaultListPage, maxListPage)
	if err != nil {
		return err
	}
	switch q.Get("order") {
	case "", "oldest":
	case "newest":
		f.Newest = true
	default:
		return invalidField("order", "must be oldest or newest")
	}
	// Keyset pages by event id: the next link continues with ?after= the
	// page's last event (?before= when newest first); one row more is read
	// to know whether any follows.
	f.Limit = limit + 1
	es, err := a.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	if len(es) > limit {
		es = es[:limit]
		param := "after"
		if f.Newest {
			param = "before"
		}
		setNext(w, r, param, strconv.FormatInt(es[limit-1].ID, 10))
	}
	out := make([]wire.AuditEvent, len(es))
	for i, e := range es {
		out[i] = toWireAudit(e)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
