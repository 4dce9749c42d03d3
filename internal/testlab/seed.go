package testlab

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jitgate/jitgate/internal/store"

	_ "modernc.org/sqlite" // the server's driver, to seed its database
)

// Seed describes live grants written straight into a stopped server's
// SQLite database, for load benchmarks: creating 100,000 grants through the
// API (one fsynced transaction each) would take many minutes.
//
// Each grant is an active request holding one grant row, as the store
// writes them. The seed writes no audit events: the trail then lacks the
// seeded requests' history, which no benchmark reads.
type Seed struct {
	// Targets extra targets named seed-000001, ... are created with the
	// policy of PolicyFrom, each with PerTarget grants from consecutive
	// sources starting at From.
	Targets   int
	PerTarget int
	// Target, an existing target, gets TargetGrants grants from consecutive
	// sources starting at TargetFrom; its revision advances so that its
	// agent fetches them.
	Target       string
	TargetGrants int
	TargetFrom   netip.Addr
	// PolicyFrom is the existing target whose policy the new targets copy.
	PolicyFrom string
	From       netip.Addr
	// Port is the granted TCP port; Duration the grants' time left.
	Port     uint16
	Duration time.Duration
	// Prefix names the seeded requests (default "seed"): ids are
	// r-PREFIX-N and the requester is PREFIX.
	Prefix string
	// Credentials gives every seeded target an agent credential,
	// SeedCredential(name), as if its agent had enrolled: a fleet of
	// simulated agents can poll at once (enrolling 10,000 through the API
	// takes minutes).
	Credentials bool
}

// SeedCredential is the agent credential SeedDB gives the seeded target
// name when Seed.Credentials is set.
func SeedCredential(name string) string {
	h := sha256.Sum256([]byte("jitgate seed credential " + name))
	return "jga_" + hex.EncodeToString(h[:20])
}

// SeedDB writes s into the SQLite database at path, in one transaction. The
// server must not be running.
func SeedDB(ctx context.Context, path string, s Seed) error {
	if s.Prefix == "" {
		s.Prefix = "seed"
	}
	db, err := sql.Open("sqlite", store.SQLiteDSN(path, "_pragma=busy_timeout(10000)", "_pragma=journal_mode(WAL)", "_txlock=immediate"))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now()
	nowMS, expMS := now.UnixMilli(), now.Add(s.Duration).UnixMilli()
	var pol sql.NullString
	if s.PolicyFrom != "" {
		if err := tx.QueryRowContext(ctx, `SELECT policy FROM targets WHERE name = $1`, s.PolicyFrom).Scan(&pol); err != nil {
			return fmt.Errorf("reading the policy of %s: %w", s.PolicyFrom, err)
		}
	}
	insTarget, err := tx.PrepareContext(ctx, `INSERT INTO targets (name, policy, created_at) VALUES ($1, $2, $3)`)
	if err != nil {
		return err
	}
	insReq, err := tx.PrepareContext(ctx, `INSERT INTO requests (id, target, requester, source, ports, duration_ms, reason,
		state, revision, created_at, activated_at, expires_at, approved_at) VALUES ($1, $2, $3, $4, $5, $6, 'bench seed', 'active', $7, $8, $8, $9, $8)`)
	if err != nil {
		return err
	}
	insGrant, err := tx.PrepareContext(ctx, `INSERT INTO grants (request_id, target, requester, source, protocol, port, expires_at)
		VALUES ($1, $2, $3, $4, 'tcp', $5, $6)`)
	if err != nil {
		return err
	}
	ports := fmt.Sprintf(`["%d/tcp"]`, s.Port)
	n := 0
	grants := func(target string, rev int64, from netip.Addr, count int) error {
		a := from
		for range count {
			n++
			id := fmt.Sprintf("r-%s-%d", s.Prefix, n)
			src := netip.PrefixFrom(a, a.BitLen()).String()
			// Alternate deadlines a second apart, so that neighbouring
			// sources stay separate kernel elements instead of merging
			// into one range (Ruleset.Elements merges equal deadlines).
			exp := expMS + int64(n%2)*1000
			if _, err := insReq.ExecContext(ctx, id, target, s.Prefix, src, ports, s.Duration.Milliseconds(), rev, nowMS, exp); err != nil {
				return fmt.Errorf("seeding request %s: %w", id, err)
			}
			if _, err := insGrant.ExecContext(ctx, id, target, s.Prefix, src, int(s.Port), exp); err != nil {
				return fmt.Errorf("seeding grant of %s: %w", id, err)
			}
			a = a.Next()
		}
		return nil
	}
	insCred, err := tx.PrepareContext(ctx, `INSERT INTO tokens (hash, id, kind, subject, created_at) VALUES ($1, $2, 'agent', $3, $4)`)
	if err != nil {
		return err
	}
	for i := range s.Targets {
		name := fmt.Sprintf("seed-%06d", i+1)
		if _, err := insTarget.ExecContext(ctx, name, pol, nowMS); err != nil {
			return fmt.Errorf("seeding target %s: %w", name, err)
		}
		if s.Credentials {
			h := sha256.Sum256([]byte(SeedCredential(name)))
			if _, err := insCred.ExecContext(ctx, hex.EncodeToString(h[:]), fmt.Sprintf("a-%s-%06d", s.Prefix, i+1), name, nowMS); err != nil {
				return fmt.Errorf("seeding the credential of %s: %w", name, err)
			}
		}
		if err := grants(name, 1, s.From, s.PerTarget); err != nil {
			return err
		}
	}
	if s.Target != "" {
		var rev int64
		err := tx.QueryRowContext(ctx, `UPDATE targets SET revision = revision + 1 WHERE name = $1 RETURNING revision`, s.Target).Scan(&rev)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("seeding: no target %s", s.Target)
		}
		if err != nil {
			return err
		}
		if err := grants(s.Target, rev, s.TargetFrom, s.TargetGrants); err != nil {
			return err
		}
	}
	return tx.Commit()
}
