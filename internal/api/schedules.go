package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recur"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// Recurring access schedules (issue 15, item 3).
//
// Who may: a schedule binds a principal to ports of a target, like a
// standing policy decision about that target, so creating and deleting one
// takes policy.write on the target (policy-admin or admin in its scope).
// It grants nothing by itself: each occurrence is an ordinary request of
// the principal, which must hold a role allowing request.create on the
// target at that moment, and which the rule's approvals and the policy
// decide like any other. A schedule's own principal may also delete it, as
// a requester may revoke their own requests. Listing shows the schedules of
// targets where the caller may write policy or read others' requests, and
// the caller's own.

func toWireSchedule(sc store.Schedule) wire.Schedule {
	return wire.Schedule{ID: sc.ID, Principal: sc.Principal, Target: sc.Target, Ports: portStrings(sc.Ports), Source: sourceString(sc.Source),
		Cron: sc.Cron, TimeZone: sc.TimeZone, Duration: wire.Duration(sc.Duration), Reason: sc.Reason, CreatedBy: sc.CreatedBy,
		CreatedAt: sc.CreatedAt, NextAt: sc.NextAt, LastRequest: sc.LastRequest}
}

// ownSchedule reports whether sc's principal is the caller.
func ownSchedule(sc store.Schedule, p store.Principal) bool {
	return sc.Principal == p.Authz().Principals[0]
}

func (a *api) createSchedule(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.ScheduleCreate
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Target == "" {
		return invalidField("target", "required")
	}
	principal, err := authz.ParsePrincipal(in.Principal)
	if err != nil {
		return invalidField("principal", "%v", err)
	}
	if strings.HasPrefix(principal, "group:") {
		return invalidField("principal", "a group cannot hold a request: name a user:NAME or service:NAME")
	}
	sc := store.Schedule{Principal: principal, Target: in.Target, Duration: time.Duration(in.Duration), Reason: strings.TrimSpace(in.Reason),
		Cron: strings.TrimSpace(in.Cron), TimeZone: strings.TrimSpace(in.TimeZone)}
	if len(in.Ports) == 0 || len(in.Ports) > 64 {
		return invalidField("ports", "name 1 to 64 ports, such as \"22\" or \"3389/tcp\"")
	}
	for i, s := range in.Ports {
		port, err := policy.ParsePort(s)
		if err != nil {
			return invalidField("ports["+strconv.Itoa(i)+"]", "%v", err)
		}
		sc.Ports = append(sc.Ports, port)
	}
	if sc.Source, err = policy.ParsePrefix(strings.TrimSpace(in.Source)); err != nil {
		return invalidField("source", "%q is not an address or a CIDR prefix (a schedule names its source: nobody asks from anywhere when it comes)", in.Source)
	}
	if sc.Duration <= 0 {
		return invalidField("duration", "required, such as \"2h\"")
	}
	if err := policy.CheckReason(sc.Reason); err != nil {
		return err
	}
	rec, err := recur.Parse(sc.Cron, sc.TimeZone)
	if err != nil {
		field := "cron"
		if strings.HasPrefix(err.Error(), "timezone") {
			field = "timezone"
		}
		return invalidField(field, "%s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), field+": "), field+" "))
	}
	now := a.Now()
	first, err := rec.First(now)
	if err != nil {
		return invalidField("cron", "%v", err)
	}
	t, err := a.targetFor(r.Context(), p, authz.WritePolicy, in.Target)
	if err != nil {
		return err
	}
	if err := checkSourceFamily(t, sc.Source); err != nil {
		return err
	}
	// The rules must allow its first occurrence (each is decided again,
	// windows included, when it comes).
	var pol policy.Policy
	if t.Policy != nil {
		pol = *t.Policy
	}
	if err := a.Limits.Evaluate(pol, policy.Request{Ports: sc.Ports, Source: sc.Source, Duration: sc.Duration, Reason: sc.Reason, At: first}); err != nil {
		return err
	}
	created, err := a.Store.CreateSchedule(r.Context(), a.actor(r, p), sc, now)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toWireSchedule(created))
	return nil
}

func (a *api) listSchedules(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	scs, err := a.Store.ListSchedules(r.Context())
	if err != nil {
		return err
	}
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return err
	}
	out := []wire.Schedule{}
	targets := map[string]*authz.Target{}
	for _, sc := range scs {
		t, ok := targets[sc.Target]
		if !ok {
			t = a.targetOf(r.Context(), sc.Target)
			targets[sc.Target] = t
		}
		if ownSchedule(sc, p) || authz.Allowed(bs, p.Authz(), authz.WritePolicy, t) || authz.Allowed(bs, p.Authz(), authz.ReadAnyRequest, t) {
			out = append(out, toWireSchedule(sc))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) deleteSchedule(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	sc, err := a.Store.GetSchedule(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if !ownSchedule(sc, p) {
		if err := a.require(r.Context(), p, authz.WritePolicy, a.targetOf(r.Context(), sc.Target)); err != nil {
			return err
		}
	}
	if err := a.Store.DeleteSchedule(r.Context(), a.actor(r, p), sc.ID, a.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
