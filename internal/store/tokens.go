package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// Token kinds.
const (
	KindAdmin  = "admin"
	KindAgent  = "agent"
	KindEnroll = "enroll"
)

// Principal is who a token speaks for.
type Principal struct {
	Kind    string
	Subject string
	TokenID string
}

// Actor is who performs a change, and from which address, for the audit trail.
type Actor struct {
	Name       string
	ClientAddr string
}

// newSecret returns a token "jg<kind letter>_<43 base64url chars>" (256 bits
// of entropy) and its id. A fast hash suffices at rest because the secret is
// random, not a password: nobody can brute-force 2^256.
func newSecret(kind string) (secret, id string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("reading random bytes: %w", err)
	}
	idb := make([]byte, 6)
	if _, err := rand.Read(idb); err != nil {
		return "", "", fmt.Errorf("reading random bytes: %w", err)
	}
	return "jg" + kind[:1] + "_" + base64.RawURLEncoding.EncodeToString(b), kind[:1] + "-" + hex.EncodeToString(idb), nil
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// insertToken stores a new token's hash and returns the secret.
func insertToken(ctx context.Context, tx *sql.Tx, kind, subject string, now time.Time, ttl time.Duration) (string, error) {
	secret, id, err := newSecret(kind)
	if err != nil {
		return "", err
	}
	var exp sql.NullInt64
	if ttl > 0 {
		exp = sql.NullInt64{Int64: ms(now.Add(ttl)), Valid: true}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO tokens (hash, id, kind, subject, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		hashSecret(secret), id, kind, subject, ms(now), exp)
	if err != nil {
		return "", fmt.Errorf("storing %s token: %w", kind, err)
	}
	return secret, nil
}

// CreateAdminToken creates an admin token for name (the first-start token).
func (s *Store) CreateAdminToken(ctx context.Context, actor Actor, name string, now time.Time) (string, error) {
	var secret string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if secret, err = insertToken(ctx, tx, KindAdmin, name, now, 0); err != nil {
			return err
		}
		return writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.TokenCreated,
			Details: map[string]any{"kind": KindAdmin, "subject": name}})
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
		p   Principal
		exp sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, `SELECT kind, subject, id, expires_at FROM tokens WHERE hash = $1`, hashSecret(secret)).
		Scan(&p.Kind, &p.Subject, &p.TokenID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Principal{}, ErrUnauthorized
	}
	if err != nil {
		return Principal{}, fmt.Errorf("looking up token: %w", err)
	}
	if exp.Valid && !now.Before(fromMS(exp.Int64)) {
		return Principal{}, ErrUnauthorized
	}
	return p, nil
}
