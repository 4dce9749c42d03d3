package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// enroll exchanges the enrollment token (the bearer) for an agent credential.
// A refused enrollment token is a failed login: audited and limited per
// source like every other refused credential (authFailed).
func (a *api) enroll(w http.ResponseWriter, r *http.Request) {
	secret, ok := bearer(r)
	if !ok {
		writeError(w, a.Logger, store.ErrUnauthorized)
		return
	}
	var in wire.EnrollRequest
	if err := decode(w, r, &in); err != nil {
		writeError(w, a.Logger, err)
		return
	}
	if len(in.Addresses) > 256 {
		writeError(w, a.Logger, invalidField("addresses", "at most 256"))
		return
	}
	sanitizeEnroll(&in)
	if in.Mode != "" && in.Mode != store.ModeHost && in.Mode != store.ModeGateway {
		writeError(w, a.Logger, invalidField("mode", "must be host or gateway"))
		return
	}
	target, cred, err := a.Store.Enroll(r.Context(), secret, in.Addresses, in.Version, a.clientAddr(r).String(), a.Now())
	if errors.Is(err, store.ErrUnauthorized) {
		if wait := a.loginFailed(r.Context(), a.clientAddr(r), "enroll", "", "invalid, used or expired enrollment token"); wait > 0 {
			tooMany(w, wait, failedLoginsMsg)
			return
		}
		writeError(w, a.Logger, err)
		return
	}
	if err == nil {
		httpedge.Authenticated(r) // a valid enrollment token (see api.auth)
	}
	if err == nil && in.Mode != "" {
		err = a.Store.RecordAgentReport(r.Context(), target, store.AgentReport{Mode: in.Mode}, a.Now())
	}
	if err != nil {
		writeError(w, a.Logger, err)
		return
	}
	a.Logger.Info("agent enrolled", "target", target, "client", a.clientAddr(r))
	writeJSON(w, http.StatusOK, wire.EnrollResponse{Target: target, Credential: cred})
}

// desired is the agent's long-poll: it answers as soon as the target's
// revision differs from ?after= (the highest revision the agent applied),
// or after the poll wait with the current state.
func (a *api) desired(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	in, err := a.pollQuery(r.URL.Query())
	if err != nil {
		return err
	}
	return a.longPoll(w, r, p, in, nil)
}

// poll is the desired long-poll's question: ?after= (the highest revision
// the agent applied), ?since= (the revision whose state it holds: the answer
// may be a delta), ?rules=1 (it takes rule changes as deltas) and ?wait=
// (how long the server may hold the answer; none: answer at once).
type poll struct {
	after, since int64
	rules        bool
	wait         time.Duration
}

// pollQuery reads the long-poll's parameters from q (GET
// /api/v1/agent/desired, or a report that carries the next poll).
func (a *api) pollQuery(q url.Values) (poll, error) {
	var after int64
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > wire.MaxRevision {
			return poll{}, invalidField("after", "must be a revision number (0 to %d)", int64(wire.MaxRevision))
		}
		after = n
	}
	// since is the revision whose state the agent holds: with it, the
	// answer may be a delta (see delta).
	var since int64
	if s := q.Get("since"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > wire.MaxRevision {
			return poll{}, invalidField("since", "must be a revision number (0 to %d)", int64(wire.MaxRevision))
		}
		since = n
	}
	// rules=1: the agent takes rule changes as deltas (wire.DesiredState.Rules);
	// without it a rule change is sent as a snapshot (an older agent).
	rules := q.Get("rules") == "1"
	// No wait means answer at once (the agent's first poll, and its retries).
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return poll{}, invalidField("wait", "must be a duration such as 25s")
		}
		wait = min(d, a.AgentPollWait)
	}
	return poll{after: after, since: since, rules: rules, wait: wait}, nil
}

// longPoll answers target's agent's long-poll in: the desired state as
// soon as the target's revision differs from in.after, or after in.wait
// with the current state; a delta since in.since when the log allows.
//
// p's credential was checked when the call began (a report checks it again
// after its body), up to the poll's wait earlier. Answered after a wait, the
// credential is checked again first (liveCredential): one replaced by a new
// enrollment, or deleted with its target, in between gets 401 (410) and not
// the state as it is now, whose grants, sources and break-glass key are the
// new agent's.
//
// known, when not nil, is the target's revision as the report carrying the
// poll read it, current while the hub's count of the target's notifications
// is known.seq (Hub.Seq): when it is, and the agent holds that revision, the
// poll waits without reading the target (the report's update read it a
// moment ago, and a change since would have moved the count).
func (a *api) longPoll(w http.ResponseWriter, r *http.Request, p store.Principal, in poll, known *revisionAt) error {
	// The answer's format follows the agent's Accept (a snapshot as lines or
	// JSON: writeSnapshot), so no cache may hand one agent's answer to a
	// request that asked otherwise. TestDesiredVaryAccept.
	w.Header().Add("Vary", "Accept")
	// Everything the poll reads goes out only in its answer, which
	// durableAnswers holds until what it read is durable: the reads do
	// not wait themselves (answerWaits), so a poll woken at a commit
	// (Hub.Committed) builds its answer during the commit's sync.
	r = r.WithContext(answerWaits(w, r.Context()))
	target := p.Subject
	waited := false
	after, since, rules, wait := in.after, in.since, in.rules, in.wait
	done := a.Presence.Begin(target)
	defer done()
	if err := a.Presence.MarkConnected(r.Context(), target, a.clientAddr(r).String()); err != nil {
		return a.goneOr(err)
	}
	var (
		ch   <-chan struct{}
		t    store.Target
		err  error
		live bool // the credential as the last read after a wait saw it
		// partial: t holds only the revision (known); read the whole
		// target before answering with it.
		partial bool
		// changes: what changed since the agent's since, read with the
		// target after a wait (nil: not read yet).
		changes *store.DesiredDelta
	)
	if known != nil && known.rev > 0 && known.rev == after && wait > 0 {
		var seq uint64
		ch, seq = a.Hub.WatchSeq(target)
		if seq == known.seq {
			t, partial = store.Target{Name: target, Revision: known.rev}, true
		}
	}
	// after is the highest revision the agent applied. One above anything
	// this process knew for the target, while the target's revision has
	// already caught up with it (so the agent cannot tell), means the
	// database went back and later changes reused the agent's revision
	// numbers: end what the older copy brought back before answering.
	//
	// The hub's channel is taken before the target is read, so that this
	// one read serves the check and the first round of the wait below (a
	// change committed after the read closes the channel); it is read
	// again only when the check ended grants.
	if !partial {
		ch = a.Hub.Watch(target)
		if t, err = a.Store.GetTarget(r.Context(), target); err != nil {
			return a.goneOr(err)
		}
	}
	fresh := true
	if t.Revision >= after {
		ended, err := a.agentAhead(r.Context(), target, after, &t, a.Now())
		if err != nil {
			return a.goneOr(err)
		}
		fresh = !ended
	}
	deadline := time.Now().Add(wait)
	for {
		if !fresh {
			ch = a.Hub.Watch(target)
			// After a wait the credential is read with the target (one
			// read: liveCredential's question, answered below), and, for
			// an agent that takes deltas, the change log since its
			// revision (the delta's read, in the same statement).
			changes = nil
			switch {
			case waited && since > 0:
				var d store.DesiredDelta
				t, live, d, err = a.Store.AgentTargetChanges(r.Context(), target, p.TokenID, since, a.Now())
				changes = &d
			case waited:
				t, live, err = a.Store.AgentTarget(r.Context(), target, p.TokenID)
			default:
				t, err = a.Store.GetTarget(r.Context(), target)
			}
			if err != nil {
				return a.goneOr(err)
			}
			partial = false
		}
		fresh = false
		// rev < after: the agent has applied a revision this database does
		// not know (it was restored from an older copy); answer at once so
		// that the agent can say so (see AgentReport.HighWater).
		if t.Revision == after && time.Until(deadline) > 0 && r.Context().Err() == nil {
			a.Hub.wait(r.Context(), ch, time.Until(deadline))
			waited = true
			continue
		}
		if partial {
			// Not waiting after all (the client left, or the wait was
			// over at once): the answer needs the whole target.
			continue
		}
		if waited && !live {
			return a.credentialGone(r.Context(), p)
		}
		if since > 0 {
			ds, ok, err := a.delta(r.Context(), t, since, rules, changes)
			if err != nil {
				return a.goneOr(err)
			}
			if ok {
				if err := a.breakGlassState(r.Context(), t, &ds, a.Now()); err != nil {
					return err
				}
				a.known.raise(target, ds.Revision)
				return writeAnswer(w, ds)
			}
		}
		rev, err := a.writeSnapshot(w, r, t)
		if err != nil {
			return a.goneOr(err)
		}
		a.known.raise(target, rev)
		return nil
	}
}

// liveCredential fails unless agent p's credential is still its target's
// (410 when the target is gone, as the poll's own reads say).
func (a *api) liveCredential(ctx context.Context, p store.Principal) error {
	ok, err := a.Store.AgentCredentialLive(ctx, p.TokenID, p.Subject)
	if err != nil {
		return err
	}
	if !ok {
		return a.credentialGone(ctx, p)
	}
	return nil
}

// credentialGone is the error for agent p whose credential is no longer its
// target's: 410 when the target is gone, else 401.
func (a *api) credentialGone(ctx context.Context, p store.Principal) error {
	if _, err := a.Store.GetTarget(ctx, p.Subject); errors.Is(err, store.ErrNotFound) {
		return a.goneOr(err)
	}
	return fmt.Errorf("credential of agent %s replaced or revoked during its poll: %w", p.Subject, store.ErrUnauthorized)
}

// revisionAt is a target's revision as read when the hub's count of the
// target's notifications was seq (longPoll).
type revisionAt struct {
	rev int64
	seq uint64
}

// writeAnswer writes an agent's delta as compact JSON in one write with its
// length: a delta is on the path from a grant's commit to the kernel, and
// the indentation people read with curl (writeJSON) only costs the agent
// time (an indented one-grant delta is about a third longer; the snapshot is
// compact already).
func writeAnswer(w http.ResponseWriter, ds wire.DesiredState) error {
	b, err := json.Marshal(ds)
	if err != nil {
		return fmt.Errorf("encoding the desired state: %w", err)
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	// A write that fails is the agent gone: it asks again when it is back.
	_, _ = w.Write(b)
	return nil
}

// streamSnapshot produces the full desired state of enforcer t at its
// current revision: the store's read (DesiredHead, then DesiredGrants a
// chunk at a time), host or gateway alike, in the agent's terms. head gets
// everything but the grants and the bastion entries; each gets
// the kernel grant entries chunk by chunk (the slice is reused), so no one
// holds every grant; the bastion entries are returned at the end (one per
// grant reached through the bastion, which the relay checks streams
// against: the agent holds them whole anyway).
func (a *api) streamSnapshot(ctx context.Context, t store.Target, head func(wire.DesiredState) error, each func([]wire.GrantEntry) error) ([]wire.BastionGrant, error) {
	now := a.Now()
	d, err := a.Store.DesiredHead(ctx, t.Name, now)
	if err != nil {
		return nil, err
	}
	ds := wire.DesiredState{Target: t.Name, Revision: d.Revision, ServerTime: now.UTC(), Protected: []wire.Port{}, Grants: []wire.GrantEntry{}}
	if d.Gateway {
		ds.Mode = store.ModeGateway
	}
	byName := map[string]store.Enforced{}
	for _, e := range d.Targets {
		byName[e.Name] = e
		ds.Protected = appendProtected(ds.Protected, e.Policy, e.Addresses, d.Gateway)
	}
	for _, m := range d.Published {
		ds.Published = append(ds.Published, wire.Mapping{Destination: m.Destination, Protocol: string(m.Port.Protocol), Port: m.Port.Number,
			PublicAddress: m.PublicAddress, MappedPort: m.MappedPort})
	}
	if err := a.breakGlassState(ctx, t, &ds, now); err != nil {
		return nil, err
	}
	// The rule as it stands now decides how a grant may be used: a
	// bastion-only grant (no source) or a port reached only through the
	// bastion opens nothing in the kernel.
	if err := head(ds); err != nil {
		return nil, err
	}
	var (
		entries []wire.GrantEntry
		bastion []wire.BastionGrant
	)
	err = a.Store.DesiredGrants(ctx, t.Name, d, now, func(gs []store.GrantRow) error {
		entries = entries[:0]
		for _, g := range gs {
			e := byName[g.Target]
			entries, bastion = appendEntries(entries, bastion, g, e.Policy, e.Addresses, d.Gateway)
		}
		if len(entries) == 0 {
			return nil
		}
		return each(entries)
	})
	return bastion, err
}

// writeSnapshot streams the snapshot of enforcer t to w, a chunk of grants
// at a time (rows -> entries -> encoder -> response), as compact JSON or,
// when the agent's Accept names it, as lines (wire.DesiredLinesType: the
// same state without the JSON codec's cost per grant), and returns its
// revision. The answer decodes to exactly what snapshot returns. An error
// before anything was written is returned (the caller maps it to a status);
// one after the status went out is logged and ends the answer short, as
// invalid JSON or without its last line, which the agent refuses whole: it
// never applies part of a state.
func (a *api) writeSnapshot(w http.ResponseWriter, r *http.Request, t store.Target) (int64, error) {
	var (
		rev     int64
		bw      *bufio.Writer
		tail    []byte
		written bool
		first   = true
		line    []byte
		lines   = wire.AcceptsDesiredLines(r.Header.Get("Accept"))
	)
	bastion, err := a.streamSnapshot(r.Context(), t, func(ds wire.DesiredState) error {
		rev = ds.Revision
		b, err := json.Marshal(ds)
		if err != nil {
			return fmt.Errorf("encoding the desired state: %w", err)
		}
		// The server's time goes last, stamped when the last grant was
		// written: the agent estimates the clock skew from it and the
		// time the answer arrived, and a million grants take seconds to
		// stream (stamped first, the transfer would pass for the agent's
		// clock being ahead and hide one that is behind).
		st, err := json.Marshal(ds.ServerTime)
		if err != nil {
			return fmt.Errorf("encoding the desired state: %w", err)
		}
		field := append(append([]byte(`"server_time":`), st...), ',')
		j := bytes.Index(b, field)
		if j < 0 {
			return errors.New("encoding the desired state: no server_time field")
		}
		b = append(b[:j:j], b[j+len(field):]...)
		// The head encodes "grants":[]; the entries go between the brackets
		// (in lines: the head is that object, the entries follow it).
		i := bytes.Index(b, []byte(`"grants":[]`))
		if i < 0 {
			return errors.New("encoding the desired state: no grants field")
		}
		i += len(`"grants":[`)
		head, ct := b[:i], "application/json"
		tail = b[i:]
		if lines {
			head, ct = append(b, '\n'), wire.DesiredLinesType
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		written = true
		bw = bufio.NewWriterSize(w, 64<<10)
		_, err = bw.Write(head)
		return err
	}, func(gs []wire.GrantEntry) error {
		for _, g := range gs {
			if lines {
				line = wire.AppendGrantLine(line[:0], g)
				if _, err := bw.Write(line); err != nil {
					return err
				}
				continue
			}
			if !first {
				bw.WriteByte(',')
			}
			first = false
			b, err := json.Marshal(g)
			if err != nil {
				return err
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case err == nil && written && lines:
		if line, err = wire.AppendDesiredTail(line[:0], bastion, a.Now().UTC()); err == nil {
			bw.Write(line)
			err = bw.Flush()
		}
	case err == nil && written:
		bw.WriteByte(']')
		if len(bastion) > 0 {
			// The bastion entries follow the grants (the order of keys is
			// free in JSON; the head encodes none: omitempty).
			var b []byte
			if b, err = json.Marshal(bastion); err == nil {
				bw.WriteString(`,"bastion":`)
				bw.Write(b)
			}
		}
		bw.Write(tail[1 : len(tail)-1]) // tail starts with the grants' closing ] and ends with }
		if err == nil {
			var st []byte
			if st, err = json.Marshal(a.Now().UTC()); err == nil {
				bw.WriteString(`,"server_time":`)
				bw.Write(st)
				bw.WriteByte('}')
			}
		}
		bw.WriteByte('\n')
		if err == nil {
			err = bw.Flush()
		}
	}
	if err != nil && written {
		a.Logger.Warn("desired state cut short while streaming it to the agent", "target", t.Name, "revision", rev, "err", err)
		return rev, nil
	}
	return rev, err
}

// delta is what changed in enforcer t's desired state since revision since,
// the revision whose state its agent holds, from the store's change log: the
// entries of the grants added, extended or removed since, nothing else. ok
// is false when only a snapshot can bring the agent up to date (a gap in the
// log, a change of more than grants, a revision this database does not
// know).
//
// A rule change of a host target (d.Rules) comes as a delta only to an
// agent that takes them (rules): with the target's complete protected ports,
// as a snapshot has them, and the grants whose entries the rules changed.
//
// changes, when not nil, is the change log as read with t
// (store.AgentTargetChanges); nil: read here.
func (a *api) delta(ctx context.Context, t store.Target, since int64, rules bool, changes *store.DesiredDelta) (wire.DesiredState, bool, error) {
	now := a.Now()
	var (
		d   store.DesiredDelta
		err error
	)
	if changes != nil {
		d = *changes
	} else if d, err = a.Store.DesiredChangesOf(ctx, t, since, now); err != nil {
		return wire.DesiredState{}, false, err
	}
	if d.Snapshot {
		return wire.DesiredState{}, false, nil
	}
	gateway := t.IsGateway()
	if d.Rules && (!rules || gateway || t.Policy == nil) {
		return wire.DesiredState{}, false, nil
	}
	ds := wire.DesiredState{Target: t.Name, Revision: d.Revision, Since: since, ServerTime: now.UTC(), Changed: d.Changed}
	if gateway {
		ds.Mode = store.ModeGateway
	}
	if d.Rules {
		ds.Rules = true
		ds.Protected = appendProtected([]wire.Port{}, *t.Policy, nil, false)
	}
	// Behind a gateway each grant is opened by the policy and addresses of
	// its own target, read once per target.
	behind := map[string]*store.Target{}
	for _, g := range d.Grants {
		var (
			pol   policy.Policy
			addrs []string
		)
		switch {
		case !gateway:
			if g.Target != t.Name || t.Policy == nil {
				continue
			}
			pol = *t.Policy
		default:
			bt, ok := behind[g.Target]
			if !ok {
				got, err := a.Store.GetTarget(ctx, g.Target)
				switch {
				case errors.Is(err, store.ErrNotFound):
				case err != nil:
					return wire.DesiredState{}, false, err
				default:
					bt = &got
				}
				behind[g.Target] = bt
			}
			if bt == nil || bt.Gateway != t.Name || bt.Policy == nil {
				continue
			}
			pol, addrs = *bt.Policy, bt.BehindAddresses()
		}
		ds.Grants, ds.Bastion = appendEntries(ds.Grants, ds.Bastion, g, pol, addrs, gateway)
	}
	if gateway && len(behind) > 0 {
		// The agent opens what it is told: the targets behind the gateway
		// as just read too, only once durable (store/syncer.go).
		if err := a.Store.Durable(ctx); err != nil {
			return wire.DesiredState{}, false, err
		}
	}
	return ds, true, nil
}

// agentAhead handles an agent that says it applied revision agentRev of
// target: above the highest revision this process knows for the target (the
// revision at start or any served since) and above the database's current
// one (another replica may have served more), it is the sign of a database
// that went back, and store.AgentAhead ends what the older copy brought
// back.
//
// A claim above the database's current revision proves it even when this
// process served that revision itself: a server only sends committed
// revisions and a committed revision never goes down, so the database went
// back under the running server (PostgreSQL failed over to a standby that
// missed the last commits, a dump put back while the servers ran).
//
// read is the target as just read by the caller (nil: read it here). ended
// reports whether grants were ended (the target changed).
func (a *api) agentAhead(ctx context.Context, target string, agentRev int64, read *store.Target, now time.Time) (ended bool, err error) {
	if read == nil {
		got, err := a.Store.GetTarget(ctx, target)
		if err != nil {
			return false, err
		}
		read = &got
	}
	cur := *read
	if agentRev > cur.Revision {
		return true, a.endAhead(ctx, target, agentRev, cur.Revision, now)
	}
	known, ok := a.known.get(target)
	if !ok {
		known = cur.Revision
	}
	if agentRev <= known {
		return false, nil
	}
	others, err := a.Store.OtherReplicasLive(ctx, a.replicaID(), now)
	if err != nil {
		return false, err
	}
	if ok && others {
		// Another replica sharing the database may have served it (the
		// agent moved here from there), and it is not above the
		// database's own revision, which alone proves it went back.
		// (Alone, this server also catches a database that went back and
		// reused the revision numbers since: with replicas, the restore
		// guard at start and the agent's own high-water mark remain for
		// that.)
		a.known.raise(target, cur.Revision)
		return false, nil
	}
	return true, a.endAhead(ctx, target, agentRev, known, now)
}

// endAhead ends what a database that went back brought back for target,
// whose agent applied agentRev when known was the highest revision the
// server could have sent it (store.AgentAhead).
func (a *api) endAhead(ctx context.Context, target string, agentRev, known int64, now time.Time) error {
	ended, newRev, err := a.Store.AgentAhead(ctx, target, agentRev, known, now)
	if err != nil {
		return err
	}
	a.known.raise(target, newRev)
	a.Logger.Warn("an agent had applied a higher revision than this server knows (database restored from an older copy?): the target's live grants ended",
		"target", target, "agent_revision", agentRev, "known_revision", known, "ended_requests", ended, "new_revision", newRev)
	return nil
}

// knownRevisions is the highest revision of each target this server process
// knows: the one in the database at start, raised by every answer to an
// agent. An agent can only have applied a revision some server sent it, and
// a server only sends committed ones, so an agent claiming more than that
// proves the database went back. nil (the check off) knows nothing.
type knownRevisions struct {
	mu sync.Mutex
	m  map[string]int64
}

// get returns the known revision; ok is false when the check is off.
func (k *knownRevisions) get(target string) (int64, bool) {
	if k == nil {
		return 0, false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[target], true
}

func (k *knownRevisions) raise(target string, rev int64) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[target] = max(k.m[target], rev)
}

// goneOr turns "target not found" into 410 Gone for the agent: its target
// was removed and it should stand down.
func (a *api) goneOr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &inputError{status: http.StatusGone, msg: "target removed"}
	}
	return err
}

// report records what the agent applied (POST /api/v1/agent/report): the
// revision, or the apply's error, and what the host holds. Committed, it
// answers 204; or, when the report carries the next long-poll's parameters
// (?after=, and since, rules, wait as for GET /api/v1/agent/desired), it
// answers that long-poll on the same exchange (longPoll): an agent applying
// a change makes one HTTP exchange per change instead of two (a report, then
// its next poll), each with its token check and net/http's fixed work. The
// parameters are checked before anything is recorded; the report is
// committed, and its activations announced, before the poll begins, exactly
// as a report followed by a poll.
func (a *api) report(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	var next *poll
	if q.Has("after") {
		in, err := a.pollQuery(q)
		if err != nil {
			return err
		}
		next = &in
	} else {
		for _, k := range []string{"since", "rules", "wait"} {
			if q.Has(k) {
				return invalidField(k, "is a long-poll parameter: a report carries its next poll only with after")
			}
		}
	}
	var in wire.AgentReport
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Revision < 0 {
		return invalidField("revision", "must not be negative")
	}
	if in.HighWater < 0 || in.HighWater > wire.MaxRevision {
		return invalidField("high_water", "must be a revision number (0 to %d)", int64(wire.MaxRevision))
	}
	if len(in.Addresses) > 256 {
		return invalidField("addresses", "at most 256")
	}
	sanitizeReport(&in)
	now := a.Now()
	if in.Mode != "" && in.Mode != store.ModeHost && in.Mode != store.ModeGateway {
		return invalidField("mode", "must be host or gateway")
	}
	// The mode, inventory and counters are recorded in the transaction
	// that records the revision (one commit per report).
	var extra *store.AgentReport
	if in.Mode != "" || in.Inventory != nil || len(in.Blocked) > 0 || len(in.BlockedSources) > 0 {
		if len(in.BlockedSources) > 10000 {
			in.BlockedSources = in.BlockedSources[:10000]
		}
		rep := fromWireReport(in)
		extra = &rep
	}
	// The credential was checked before the body, which may take the
	// body timeout to arrive: one replaced (the target enrolled again) or
	// deleted meanwhile records nothing (TestReplacedCredentialRecordsNoReport):
	// the store's update checks it (ReportAppliedWith's credential), and
	// here before a high water ends grants.
	if in.HighWater > 0 {
		if err := a.liveCredential(r.Context(), p); err != nil {
			return err
		}
		// The agent refused our state because it had applied a higher
		// revision: the database went back. End what the copy brought
		// back for this target before anything else is recorded.
		if _, err := a.agentAhead(r.Context(), p.Subject, in.HighWater, nil, now); err != nil {
			return a.goneOr(err)
		}
	}
	// The target's Seq before the report: the revision its update reads
	// is current while only the report's own notification (below) has
	// moved it.
	seq := a.Hub.Seq(p.Subject)
	activated, rev, err := a.Store.ReportAppliedRevision(r.Context(), p.Subject, p.TokenID, in.Revision, in.Error, in.Addresses, in.Version, now, extra)
	if err != nil {
		return a.goneOr(err)
	}
	if in.Error == "" && in.ApplyMillis >= 0 {
		a.Metrics.ApplySeconds.Observe(in.ApplyMillis / 1000)
	}
	if in.Error != "" {
		a.Metrics.ApplyErrors.WithLabelValues(p.Subject).Inc()
	}
	for _, req := range activated {
		a.Metrics.GrantLatency.Observe(now.Sub(req.CreatedAt).Seconds())
	}
	a.Presence.Seen(p.Subject)
	// Wake clients following the target's requests (and, behind a gateway,
	// those of the targets it activated requests for): one notification,
	// which counts once for the target however many it names.
	var others []string
	for _, req := range activated {
		if req.Target != p.Subject && !slices.Contains(others, req.Target) {
			others = append(others, req.Target)
		}
	}
	before, after := a.Hub.NotifySeq(p.Subject, others...)
	if next != nil {
		// its credential checked after the body. rev is current while the
		// target's Seq is after, if nothing notified the target between
		// the Seq read above and this notification (before).
		var known *revisionAt
		if before == seq {
			known = &revisionAt{rev: rev, seq: after}
		}
		return a.longPoll(w, r, p, *next, known)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Presence tracks which agents are connected: an agent is connected while a
// long-poll of its is open, or was within the grace period.
type Presence struct {
	mu       sync.Mutex
	inflight map[string]int
	lastSeen map[string]time.Time
	marked   map[string]bool // recorded connected in the store by this process
	addr     map[string]string
	store    *store.Store
	grace    time.Duration
	started  time.Time
}

// NewPresence returns a tracker that declares an agent disconnected after
// grace without a poll.
func NewPresence(s *store.Store, grace time.Duration) *Presence {
	return &Presence{inflight: map[string]int{}, lastSeen: map[string]time.Time{}, marked: map[string]bool{}, addr: map[string]string{}, store: s, grace: grace, started: time.Now()}
}

// Begin marks a poll of target as open; the returned func closes it.
func (p *Presence) Begin(target string) func() {
	p.mu.Lock()
	p.inflight[target]++
	p.lastSeen[target] = time.Now()
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.inflight[target]--
		p.lastSeen[target] = time.Now()
		p.mu.Unlock()
	}
}

// Seen records contact with target's agent.
func (p *Presence) Seen(target string) {
	p.mu.Lock()
	p.lastSeen[target] = time.Now()
	p.mu.Unlock()
}

// MarkConnected records the agent as connected (audited on change). It
// writes only when this process has not recorded it yet, so polls cost no
// write.
func (p *Presence) MarkConnected(ctx context.Context, target, clientAddr string) error {
	p.mu.Lock()
	done := p.marked[target]
	p.addr[target] = clientAddr
	p.mu.Unlock()
	if done {
		return nil
	}
	if err := p.store.SetAgentState(ctx, target, store.AgentConnected, clientAddr, time.Now()); err != nil {
		return err
	}
	p.mu.Lock()
	p.marked[target] = true
	p.mu.Unlock()
	return nil
}

// LastSeen returns when each agent was last in contact with this process:
// now for those with a poll open.
func (p *Presence) LastSeen(now time.Time) map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]time.Time, len(p.lastSeen))
	for t, seen := range p.lastSeen {
		if p.inflight[t] > 0 {
			seen = now
		}
		out[t] = seen
	}
	return out
}

// Connected counts agents with an open poll or recent contact.
func (p *Presence) Connected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for t, seen := range p.lastSeen {
		if p.inflight[t] > 0 || time.Since(seen) < p.grace {
			n++
		}
	}
	return n
}

// Check runs every few seconds on every replica (server.presenceLoop). The
// agents whose polls this replica serves are recorded as seen now in the
// store, and recorded connected again if another replica took them for
// gone; then every agent recorded connected that no replica has seen
// within the grace period is recorded disconnected (audited once, by
// whichever replica looks first). In the grace period after this process
// started nothing is recorded disconnected: agents are still finding it.
//
// The grace period must be several times the period of Check, so that a
// replica serving an agent refreshes it before another finds it stale.
func (p *Presence) Check(ctx context.Context, now time.Time) error {
	p.mu.Lock()
	var live []string
	for t, seen := range p.lastSeen {
		if p.inflight[t] > 0 || now.Sub(seen) < p.grace {
			live = append(live, t)
		}
	}
	p.mu.Unlock()
	sort.Strings(live)
	back, err := p.store.TouchAgents(ctx, live, now)
	if err != nil {
		return err
	}
	for _, t := range back {
		p.mu.Lock()
		delete(p.marked, t)
		addr := p.addr[t]
		p.mu.Unlock()
		if err := p.MarkConnected(ctx, t, addr); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	if now.Sub(p.started) < p.grace {
		return nil
	}
	gone, err := p.store.DisconnectStaleAgents(ctx, now.Add(-p.grace), now)
	if err != nil {
		return err
	}
	p.mu.Lock()
	for _, t := range gone {
		delete(p.marked, t)
	}
	p.mu.Unlock()
	return nil
}

// appendProtected appends the protected ports of policy pol: for a host
// target, one per rule; behind a gateway, one per rule and address of the
// target, so that a dual-stack host is closed on both families.
func appendProtected(out []wire.Port, pol policy.Policy, addrs []string, gateway bool) []wire.Port {
	for _, r := range pol.Rules {
		p := wire.Port{Port: r.Number, Protocol: string(r.Protocol), CloseEstablished: r.CloseEstablished,
			Access: string(r.Access), IdleTimeout: wire.Duration(r.IdleTimeout)}
		if !gateway {
			out = append(out, p)
			continue
		}
		for _, addr := range addrs {
			p.Destination = addr
			out = append(out, p)
		}
	}
	return out
}
