package store_test

import (
	"context"
	"path/filepath"
	"testing"
)

// TestPointReadsStartNoGoroutine: the reads every API call makes (the token
// check, a request, a target, a token, the role bindings, the long-poll's
// view, and the agent long-poll's answer: its target with the credential,
// the delta, the revoked break-glass tokens), given a context that can be
// cancelled (every HTTP request's), cost on SQLite what they cost with one
// that cannot, but for the one context that drops the cancellation: no
// goroutine of database/sql's to close the rows and none of the driver's to
// interrupt the statement (with their channel and context), which were 4 %
// of the server's CPU at 1,000 requests/s.
func TestPointReadsStartNoGoroutine(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "j.db"))
	admin, cred, req := seed(t, s)
	p, err := s.Authenticate(t.Context(), admin, t0)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := s.Authenticate(t.Context(), cred, t0)
	if err != nil {
		t.Fatal(err)
	}
	web1, err := s.GetTarget(t.Context(), "web-1")
	if err != nil || web1.Revision < 2 {
		t.Fatalf("web-1: %+v, %v; want a revision with a change before it", web1, err)
	}
	reads := map[string]func(ctx context.Context) error{
		"Authenticate": func(ctx context.Context) error { _, err := s.Authenticate(ctx, admin, t0); return err },
		"GetToken":     func(ctx context.Context) error { _, err := s.GetToken(ctx, p.TokenID, t0); return err },
		"GetTarget":    func(ctx context.Context) error { _, err := s.GetTarget(ctx, "web-1"); return err },
		"GetRequest":   func(ctx context.Context) error { _, err := s.GetRequest(ctx, req.ID); return err },
		"ReadRequestView": func(ctx context.Context) error {
			_, err := s.ReadRequestView(ctx, req.ID, p.TokenID, t0)
			return err
		},
		"ListBindings": func(ctx context.Context) error { _, err := s.ListBindings(ctx); return err },
		// The agent long-poll's answer: its target with the credential,
		// the delta, the revoked break-glass tokens.
		"AgentTarget": func(ctx context.Context) error { _, _, err := s.AgentTarget(ctx, "web-1", ap.TokenID); return err },
		"DesiredChangesOf": func(ctx context.Context) error {
			_, err := s.DesiredChangesOf(ctx, web1, web1.Revision-1, t0)
			return err
		},
		"RevokedBreakGlassTokensOf": func(ctx context.Context) error { _, err := s.RevokedBreakGlassTokensOf(ctx, web1, t0); return err },
	}
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for name, read := range reads {
		allocs := func(ctx context.Context) float64 {
			return testing.AllocsPerRun(50, func() {
				if err := read(ctx); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			})
		}
		plain, withCancel := allocs(context.Background()), allocs(cancellable)
		if withCancel > plain+1 {
			t.Errorf("%s: %.0f allocations with a cancellable context, %.0f without: it starts goroutines to watch the context", name, withCancel, plain)
		}
	}
}
