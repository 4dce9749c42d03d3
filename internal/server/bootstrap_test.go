package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestBootstrapAdminRace: replicas starting together on an empty database
// create one first admin token between them, not one each (a second admin
// token nobody knows of, written to another host's data directory). The
// replicas are several stores on one database, each with its own data
// directory, released at once; exactly one of them writes the token file,
// and its token is the one the database knows.
func TestBootstrapAdminRace(t *testing.T) {
	// More than two racers make the window of the old count-then-create
	// (outside one transaction) all but certain to be hit.
	const replicas = 4
	for _, tc := range []struct {
		name string
		open func(t *testing.T) []*store.Store
	}{
		{"sqlite", func(t *testing.T) []*store.Store {
			path := filepath.Join(t.TempDir(), "jitgate.db")
			ss := make([]*store.Store, replicas)
			for i := range ss {
				s, err := store.OpenSQLite(t.Context(), path, store.DefaultConfig())
				if err != nil {
					t.Fatalf("OpenSQLite: %v", err)
				}
				t.Cleanup(func() { s.Close() })
				ss[i] = s
			}
			return ss
		}},
		{"postgres", func(t *testing.T) []*store.Store {
			url := testenv.Postgres(t)
			ss := make([]*store.Store, replicas)
			for i := range ss {
				s, err := store.OpenPostgres(t.Context(), url, store.DefaultConfig())
				if err != nil {
					t.Fatalf("OpenPostgres: %v", err)
				}
				t.Cleanup(func() { s.Close() })
				ss[i] = s
			}
			return ss
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			stores := tc.open(t)
			dirs := make([]string, len(stores))
			errs := make([]error, len(stores))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, st := range stores {
				dirs[i] = t.TempDir()
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = bootstrapAdmin(ctx, st, dirs[i], slog.New(slog.DiscardHandler))
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("replica %d: bootstrapAdmin: %v", i, err)
				}
			}
			n, err := stores[0].CountTokens(ctx, store.KindAdmin)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("%d replicas starting together made %d admin tokens, want 1", len(stores), n)
			}
			var files []string
			for _, dir := range dirs {
				raw, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
				if os.IsNotExist(err) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, strings.TrimSpace(string(raw)))
			}
			if len(files) != 1 {
				t.Fatalf("%d replicas wrote the admin token file, want 1", len(files))
			}
			p, err := stores[len(stores)-1].Authenticate(ctx, files[0], time.Now())
			if err != nil || p.Kind != store.KindAdmin || p.Subject != "admin" {
				t.Errorf("the written token authenticates as %+v, %v; want the admin", p, err)
			}
		})
	}
}
