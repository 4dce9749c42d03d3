package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/random"
)

// Token kinds. People hold admin (the first-start token of user "admin"),
// personal and session tokens; services hold service tokens; agents hold
// agent credentials; enrollment tokens work once.
const (
	KindAdmin    = "admin"
	KindPersonal = "personal"
	KindSession  = "session"
	KindService  = "service"
	KindAgent    = "agent"
	KindEnroll   = "enroll"
)

// Principal is who a token speaks for.
type Principal struct {
	Kind    string
	Subject string
	TokenID string
	// Groups come from the identity provider (session tokens).
	Groups []string
	// Limits narrow the owner's grants; empty means all of them.
	Limits []authz.Grant
}

// Human reports whether the token belongs to a person or a service (not an
// agent or an enrollment token).
func (p Principal) Human() bool {
	switch p.Kind {
	case KindAdmin, KindPersonal, KindSession, KindService:
		return true
	}
	return false
}

// Name is how the principal appears as an actor and a requester: the user
// name, or "service:NAME".
func (p Principal) Name() string {
	if p.Kind == KindService {
		return "service:" + p.Subject
	}
	return p.Subject
}

// Owner is whom the principal's tokens belong to: a user or a service.
func (p Principal) Owner() Owner { return Owner{Service: p.Kind == KindService, Name: p.Subject} }

// Owner is whom a token belongs to: a user (admin, personal and session
// tokens) or a service account (service tokens), by name. Ownership compares
// both: a user named "deploy" owns nothing of the service "deploy", whatever
// the two look like once formatted.
type Owner struct {
	Service bool
	Name    string
}

// userKinds are the token kinds that speak for a user (not a service).
func userKind(kind string) bool {
	return kind == KindAdmin || kind == KindPersonal || kind == KindSession
}

// Authz is the principal as the authorizer sees it.
func (p Principal) Authz() authz.Subject {
	sub := authz.Subject{Limit: p.Limits}
	if p.Kind == KindService {
		sub.Principals = []string{"service:" + p.Subject}
	} else {
		sub.Principals = []string{"user:" + p.Subject}
	}
	for _, g := range p.Groups {
		sub.Principals = append(sub.Principals, "group:"+g)
	}
	return sub
}

// Actor is who performs a change, and from which address, for the audit trail.
type Actor struct {
	Name       string
	ClientAddr string
	// Member, for an approver, lists the groups or roles among the
	// request's approvals by group that the approver belongs to (the API
	// works it out from the approver's principals and role bindings).
	Member []string
	// Subject, for an approver, is their principals and token limit at
	// the approval. It is recorded with the approval so that a scheduled
	// request's start can ask again whether the approver still may
	// approve on its target (an approval without one counts for nothing
	// there: StartScheduled fails closed).
	Subject authz.Subject
}

// newSecret returns a token "jg<kind letter>_<43 base64url chars>" (256 bits
// of entropy) and its id. A fast hash suffices at rest because the secret is
// random, not a password: nobody can brute-force 2^256.
func newSecret(kind string) (secret, id string) {
	return "jg" + kind[:1] + "_" + random.Secret(), kind[:1] + "-" + random.Hex(6)
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// insertToken stores a new token's hash and returns the secret; ttl 0 means
// no expiry.
func insertToken(ctx context.Context, tx *sql.Tx, kind, subject string, now time.Time, ttl time.Duration) (string, error) {
	var expires time.Time
	if ttl > 0 {
		expires = now.Add(ttl)
	}
	return insertTokenUntil(ctx, tx, kind, subject, now, expires)
}

// insertTokenUntil stores a new token's hash and returns the secret. A zero
// expires means the token does not expire.
func insertTokenUntil(ctx context.Context, tx *sql.Tx, kind, subject string, now, expires time.Time) (string, error) {
	secret, id := newSecret(kind)
	var exp sql.NullInt64
	if !expires.IsZero() {
		exp = sql.NullInt64{Int64: ms(expires), Valid: true}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO tokens (hash, id, kind, subject, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		hashSecret(secret), id, kind, subject, ms(now), exp)
	if err != nil {
		return "", fmt.Errorf("storing %s token: %w", kind, err)
	}
	return secret, nil
}

// CreateAdminToken creates an admin token for name (the first-start token).
func (s *Store) CreateAdminToken(ctx context.Context, actor Actor, name string, now time.Time) (string, error) {
	if err := authz.CheckName("user", name); err != nil {
		return "", err
	}
	var secret string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		secret, err = s.createAdminToken(ctx, tx, actor, name, now)
		return err
	})
	return secret, err
}

// createAdminToken inserts an admin token for name in tx, binds name as
// admin and audits it.
func (s *Store) createAdminToken(ctx context.Context, tx *sql.Tx, actor Actor, name string, now time.Time) (string, error) {
	secret, err := insertToken(ctx, tx, KindAdmin, name, now, 0)
	if err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO bindings (principal, role, scope, created_at, created_by) VALUES ($1, 'admin', '*', $2, $3)
		ON CONFLICT DO NOTHING`, "user:"+name, ms(now), actor.Name); err != nil {
		return "", fmt.Errorf("binding %s as admin: %w", name, err)
	}
	if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TokenCreated,
		Details: map[string]any{"kind": KindAdmin, "subject": name}}); err != nil {
		return "", err
	}
	return secret, nil
}

// BootstrapAdminToken creates an admin token for name when the database has
// no admin token yet and returns its secret; when one exists it returns ""
// and creates nothing. The check and the creation are one write transaction
// (under the write lock on PostgreSQL), so replicas starting together on an
// empty database make one first token between them, not one each
// (server.TestBootstrapAdminRace).
func (s *Store) BootstrapAdminToken(ctx context.Context, actor Actor, name string, now time.Time) (string, error) {
	if err := authz.CheckName("user", name); err != nil {
		return "", err
	}
	var secret string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE kind = $1`, KindAdmin).Scan(&n); err != nil {
			return fmt.Errorf("counting admin tokens: %w", err)
		}
		if n > 0 {
			return nil
		}
		var err error
		secret, err = s.createAdminToken(ctx, tx, actor, name, now)
		return err
	})
	return secret, err
}

// CountTokens counts tokens of a kind.
func (s *Store) CountTokens(ctx context.Context, kind string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE kind = $1`, kind).Scan(&n)
	return n, err
}

// Authenticate returns the principal of a secret that is known and unexpired.
func (s *Store) Authenticate(ctx context.Context, secret string, now time.Time) (Principal, error) {
	if !strings.HasPrefix(secret, "jg") || len(secret) > 100 {
		return Principal{}, ErrUnauthorized
	}
	var (
		p              Principal
		exp            sql.NullInt64
		groups, limits string
	)
	err := s.db.QueryRowContext(s.pointCtx(ctx), `SELECT kind, subject, id, expires_at, groups, limits FROM tokens WHERE hash = $1`, hashSecret(secret)).
		Scan(&p.Kind, &p.Subject, &p.TokenID, &exp, &groups, &limits)
	if errors.Is(err, sql.ErrNoRows) {
		return Principal{}, ErrUnauthorized
	}
	if err != nil {
		return Principal{}, fmt.Errorf("looking up token: %w", err)
	}
	if exp.Valid && !now.Before(fromMS(exp.Int64)) {
		return Principal{}, ErrUnauthorized
	}
	if userKind(p.Kind) && authz.CheckName("user", p.Subject) != nil {
		// A token issued before user names were checked, to a name that
		// passes for another kind of principal ("service:deploy").
		return Principal{}, ErrUnauthorized
	}
	d, err := decodeTokenJSON(groups, limits)
	if err != nil {
		return Principal{}, err
	}
	p.Groups, p.Limits = d.groups, d.limits
	return p, nil
}

// TokenSpec describes a token to create.
type TokenSpec struct {
	Kind    string
	Subject string // user name, or service name for service tokens
	Name    string // what it is for, shown in listings
	Groups  []string
	Limits  []authz.Grant
	// TTL is the token's life; 0 means no expiry (only for admin tokens).
	TTL time.Duration
	// Parent is the token this one is derived from: the token of the same
	// person that asked for it (a personal token made with a session, a
	// console session made with a pasted token). The new token never
	// outlives its parent (its expiry is capped at the parent's) and is
	// revoked with it. Empty for root tokens.
	Parent string
	// CreatedWith is the token that asked, when it is not the parent (a
	// service token, or a token issued for another user): recorded in the
	// audit event so that what a stolen token minted can be found.
	CreatedWith string
	// Impersonation marks a personal token an admin issues for another user:
	// it is audited as audit.TokenImpersonation, not token.created.
	Impersonation bool
}

// TokenInfo is a token as listed: never its secret.
type TokenInfo struct {
	ID        string
	Kind      string
	Subject   string
	Name      string
	Groups    []string
	Limits    []authz.Grant
	CreatedAt time.Time
	ExpiresAt *time.Time
	CreatedBy string
	// Parent is the token this one derives from (see TokenSpec.Parent).
	Parent string
}

// Owner is whom the token belongs to.
func (t TokenInfo) Owner() Owner { return Owner{Service: t.Kind == KindService, Name: t.Subject} }

// CreateToken stores a new token and returns its secret, which is shown
// once: only its hash is kept. A token with a parent expires at the latest
// when the parent does (info.ExpiresAt says when; it may be earlier than
// now+TTL), and cannot be made once the parent is revoked or expired
// (ErrUnauthorized): the check and the insert share one transaction, so a
// concurrent revocation of the parent either refuses the child or revokes it.
func (s *Store) CreateToken(ctx context.Context, actor Actor, spec TokenSpec, now time.Time) (string, TokenInfo, error) {
	switch spec.Kind {
	case KindPersonal, KindSession, KindService, KindAdmin:
	default:
		return "", TokenInfo{}, fmt.Errorf("token kind %q cannot be created here", spec.Kind)
	}
	if spec.Subject == "" {
		return "", TokenInfo{}, fmt.Errorf("a token needs a subject")
	}
	kind := "user"
	if spec.Kind == KindService {
		kind = "service"
	}
	if err := authz.CheckName(kind, spec.Subject); err != nil {
		return "", TokenInfo{}, err
	}
	groups, _ := json.Marshal(nonNilStrings(spec.Groups))
	limits, _ := json.Marshal(nonNilGrants(spec.Limits))
	var (
		secret  string
		id      string
		expires time.Time
	)
	if spec.TTL > 0 {
		expires = now.Add(spec.TTL)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var parent sql.NullString
		if spec.Parent != "" {
			var (
				pkind, psubject string
				pexp            sql.NullInt64
			)
			err := tx.QueryRowContext(ctx, `SELECT kind, subject, expires_at FROM tokens WHERE id = $1`, spec.Parent).Scan(&pkind, &psubject, &pexp)
			if errors.Is(err, sql.ErrNoRows) || err == nil && pexp.Valid && !now.Before(fromMS(pexp.Int64)) {
				return fmt.Errorf("the token %s that asked for this one was revoked or has expired: %w", spec.Parent, ErrUnauthorized)
			}
			if err != nil {
				return fmt.Errorf("reading parent token %s: %w", spec.Parent, err)
			}
			if !userKind(pkind) || !userKind(spec.Kind) || psubject != spec.Subject {
				return fmt.Errorf("a %s token of %q cannot derive from %s token %s of %q", spec.Kind, spec.Subject, pkind, spec.Parent, psubject)
			}
			if pexp.Valid && (expires.IsZero() || fromMS(pexp.Int64).Before(expires)) {
				expires = fromMS(pexp.Int64)
			}
			parent = sql.NullString{String: spec.Parent, Valid: true}
		}
		var err error
		if secret, err = insertTokenUntil(ctx, tx, spec.Kind, spec.Subject, now, expires); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `UPDATE tokens SET name = $1, groups = $2, limits = $3, created_by = $4, parent_id = $5 WHERE hash = $6 RETURNING id`,
			spec.Name, string(groups), string(limits), actor.Name, parent, hashSecret(secret)).Scan(&id); err != nil {
			return fmt.Errorf("describing token: %w", err)
		}
		action, details := audit.TokenCreated, map[string]any{"kind": spec.Kind, "subject": spec.Subject, "name": spec.Name, "token_id": id, "ttl": spec.TTL.String()}
		if !expires.IsZero() {
			details["expires_at"] = expires.UTC().Format(time.RFC3339Nano)
		}
		if spec.Parent != "" {
			details["parent"] = spec.Parent
		}
		if spec.CreatedWith != "" {
			details["created_with"] = spec.CreatedWith
		}
		if spec.Impersonation {
			action = audit.TokenImpersonation
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: action, Details: details})
	})
	if err != nil {
		return "", TokenInfo{}, err
	}
	info := TokenInfo{ID: id, Kind: spec.Kind, Subject: spec.Subject, Name: spec.Name, Groups: spec.Groups, Limits: spec.Limits,
		CreatedAt: now.UTC(), CreatedBy: actor.Name, Parent: spec.Parent}
	if !expires.IsZero() {
		e := fromMS(ms(expires)).UTC() // as stored, to the millisecond
		info.ExpiresAt = &e
	}
	return secret, info, nil
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilGrants(g []authz.Grant) []authz.Grant {
	if g == nil {
		return []authz.Grant{}
	}
	return g
}

const tokenColumns = `id, kind, subject, name, groups, limits, created_at, expires_at, created_by, parent_id`

// humanKinds selects the tokens of people and services (not agents' or
// enrollment tokens), unexpired at $1.
const humanKinds = `kind IN ('admin', 'personal', 'session', 'service') AND (expires_at IS NULL OR expires_at > $1)`

func scanToken(r scanner) (TokenInfo, error) {
	var (
		t              TokenInfo
		groups, limits string
		created        int64
		exp            sql.NullInt64
		parent         sql.NullString
	)
	if err := r.Scan(&t.ID, &t.Kind, &t.Subject, &t.Name, &groups, &limits, &created, &exp, &t.CreatedBy, &parent); err != nil {
		return TokenInfo{}, err
	}
	t.Parent = parent.String
	if err := json.Unmarshal([]byte(groups), &t.Groups); err != nil {
		return TokenInfo{}, fmt.Errorf("decoding groups of token %s: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(limits), &t.Limits); err != nil {
		return TokenInfo{}, fmt.Errorf("decoding limits of token %s: %w", t.ID, err)
	}
	t.CreatedAt, t.ExpiresAt = fromMS(created), fromNullMS(exp)
	return t, nil
}

// ListTokens lists the people's and services' tokens, of one owner when
// owner is not nil (a user's admin, personal and session tokens, or a
// service's service tokens: never the other kind's of the same name);
// expired tokens are left out.
func (s *Store) ListTokens(ctx context.Context, owner *Owner, now time.Time) ([]TokenInfo, error) {
	return s.ListTokensAfter(ctx, owner, now, nil, -1)
}

// TokenKey is a token's place in the order of ListTokens.
type TokenKey struct {
	CreatedAt time.Time
	ID        string
}

// ListTokensAfter is a page of ListTokens (keyset paging): at most limit
// tokens (all for limit < 0) after the one at after (nil: from the start).
func (s *Store) ListTokensAfter(ctx context.Context, owner *Owner, now time.Time, after *TokenKey, limit int) ([]TokenInfo, error) {
	q := `SELECT ` + tokenColumns + ` FROM tokens WHERE ` + humanKinds
	args := []any{ms(now)}
	if owner != nil {
		kinds := `('admin', 'personal', 'session')`
		if owner.Service {
			kinds = `('service')`
		}
		args = append(args, owner.Name)
		q += ` AND kind IN ` + kinds + ` AND subject = $2`
	}
	if after != nil {
		args = append(args, ms(after.CreatedAt), after.ID)
		q += fmt.Sprintf(` AND (created_at, id) > ($%d, $%d)`, len(args)-1, len(args))
	}
	q += ` ORDER BY created_at, id`
	if limit >= 0 {
		args = append(args, limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	defer rows.Close()
	var out []TokenInfo
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("reading token: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// GetToken returns one unexpired token's description.
func (s *Store) GetToken(ctx context.Context, id string, now time.Time) (TokenInfo, error) {
	t, err := scanToken(s.db.QueryRowContext(s.pointCtx(ctx), `SELECT `+tokenColumns+` FROM tokens WHERE `+humanKinds+` AND id = $2`, ms(now), id))
	if errors.Is(err, sql.ErrNoRows) {
		return TokenInfo{}, fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return TokenInfo{}, fmt.Errorf("reading token %s: %w", id, err)
	}
	return t, nil
}

// deleteDescendants deletes every token derived from token id, transitively
// (parent_id chains; a chain cannot loop, since a parent exists before its
// children), and returns them ordered by id.
const deleteDescendants = `WITH RECURSIVE lineage(id) AS (
	SELECT id FROM tokens WHERE parent_id = $1
	UNION
	SELECT t.id FROM tokens t JOIN lineage l ON t.parent_id = l.id
)
DELETE FROM tokens WHERE id IN (SELECT id FROM lineage) RETURNING id, kind, subject, parent_id`

// RevokeToken deletes a token and every token derived from it (personal
// tokens and console sessions made with it, and theirs): they all stop
// working at once, in one transaction, and each is audited as
// token.revoked (the derived ones with the revoked token as "revoked_with").
// It returns the ids of the derived tokens it revoked.
func (s *Store) RevokeToken(ctx context.Context, actor Actor, id string, now time.Time) ([]string, error) {
	var derived []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		derived = nil
		var kind, subject string
		err := tx.QueryRowContext(ctx, `DELETE FROM tokens WHERE id = $1 AND kind IN ('admin', 'personal', 'session', 'service') RETURNING kind, subject`, id).Scan(&kind, &subject)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("revoking token: %w", err)
		}
		rows, err := tx.QueryContext(ctx, deleteDescendants, id)
		if err != nil {
			return fmt.Errorf("revoking the tokens derived from %s: %w", id, err)
		}
		type row struct{ id, kind, subject, parent string }
		var gone []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.kind, &r.subject, &r.parent); err != nil {
				rows.Close()
				return fmt.Errorf("reading a revoked derived token: %w", err)
			}
			gone = append(gone, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("revoking the tokens derived from %s: %w", id, err)
		}
		slices.SortFunc(gone, func(a, b row) int { return strings.Compare(a.id, b.id) })
		for _, r := range gone {
			derived = append(derived, r.id)
		}
		details := map[string]any{"kind": kind, "subject": subject, "token_id": id}
		if len(derived) > 0 {
			details["derived"] = derived
		}
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TokenRevoked, Details: details}); err != nil {
			return err
		}
		for _, r := range gone {
			if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TokenRevoked,
				Reason:  "derived from revoked token " + id,
				Details: map[string]any{"kind": r.kind, "subject": r.subject, "token_id": r.id, "parent": r.parent, "revoked_with": id}}); err != nil {
				return err
			}
		}
		return nil
	})
	return derived, err
}

// PruneExpiredTokens deletes at most limit tokens (of every kind: personal,
// service, console and single sign-on sessions, enrollment) that expired at
// or before now, and returns how many. Only expired rows go: a token that
// never expires, or expires later, stays whatever else holds. Expired
// tokens already authenticate nothing; pruning keeps the table from growing
// one row per login forever. Batches keep each write transaction short, so
// the grant path never waits long behind a prune: the caller repeats while
// a full batch came back.
func (s *Store) PruneExpiredTokens(ctx context.Context, now time.Time, limit int) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE hash IN
			(SELECT hash FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2)`, ms(now), limit)
		if err != nil {
			return fmt.Errorf("pruning expired tokens: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
