package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
)

// CreateBinding gives a principal a role within a scope.
func (s *Store) CreateBinding(ctx context.Context, actor Actor, b authz.Binding, now time.Time) (authz.Binding, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO bindings (principal, role, scope, created_at, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			b.Principal, string(b.Role), string(b.Scope), ms(now), actor.Name).Scan(&b.ID)
		if err != nil {
			if strings.Contains(err.Error(), "UNIQUE") || strings.Contains(err.Error(), "unique") {
				return fmt.Errorf("%s already has role %s in scope %s: %w", b.Principal, b.Role, b.Scope, ErrConflict)
			}
			return fmt.Errorf("inserting binding: %w", err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.BindingCreated,
			Details: map[string]any{"principal": b.Principal, "role": string(b.Role), "scope": string(b.Scope), "binding_id": b.ID}})
	})
	return b, err
}

// DeleteBinding removes a binding. Removing the last installation-wide admin
// binding is refused: nobody could manage access afterwards.
func (s *Store) DeleteBinding(ctx context.Context, actor Actor, b authz.Binding, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM bindings WHERE principal = $1 AND role = $2 AND scope = $3`,
			b.Principal, string(b.Role), string(b.Scope)).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s has no role %s in scope %s: %w", b.Principal, b.Role, b.Scope, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("finding binding: %w", err)
		}
		if b.Role == authz.Admin && b.Scope == authz.Everywhere {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM bindings WHERE role = 'admin' AND scope = '*'`).Scan(&n); err != nil {
				return fmt.Errorf("counting admins: %w", err)
			}
			if n <= 1 {
				return fmt.Errorf("refusing to remove the last installation-wide admin binding: %w", ErrConflict)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM bindings WHERE id = $1`, id); err != nil {
			return fmt.Errorf("deleting binding: %w", err)
		}
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.BindingDeleted,
			Details: map[string]any{"principal": b.Principal, "role": string(b.Role), "scope": string(b.Scope), "binding_id": id}})
	})
}

// ListBindings returns every binding.
func (s *Store) ListBindings(ctx context.Context) ([]authz.Binding, error) {
	return listBindings(s.pointCtx(ctx), s.db)
}

// listBindings reads the bindings through q (the store, or a transaction
// that decides with them).
func listBindings(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([]authz.Binding, error) {
	return listBindingsAfter(ctx, q, nil, -1)
}

// ListBindingsAfter is a page of ListBindings (keyset paging): at most limit
// bindings (all for limit < 0) that sort after after (nil: from the start).
func (s *Store) ListBindingsAfter(ctx context.Context, after *authz.Binding, limit int) ([]authz.Binding, error) {
	return listBindingsAfter(ctx, s.db, after, limit)
}

func listBindingsAfter(ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, after *authz.Binding, limit int) ([]authz.Binding, error) {
	q, args := `SELECT id, principal, role, scope FROM bindings`, []any{}
	if after != nil {
		args = append(args, after.Principal, string(after.Role), string(after.Scope), after.ID)
		q += ` WHERE (principal, role, scope, id) > ($1, $2, $3, $4)`
	}
	q += ` ORDER BY principal, role, scope, id`
	if limit >= 0 {
		args = append(args, limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing bindings: %w", err)
	}
	defer rows.Close()
	var out []authz.Binding
	for rows.Next() {
		var (
			b           authz.Binding
			role, scope string
		)
		if err := rows.Scan(&b.ID, &b.Principal, &role, &scope); err != nil {
			return nil, fmt.Errorf("reading binding: %w", err)
		}
		b.Role, b.Scope = authz.Role(role), authz.Scope(scope)
		out = append(out, b)
	}
	return out, rows.Err()
}
