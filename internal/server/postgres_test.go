package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }

// TestRunOnPostgres: with Database set the server keeps its state in that
// PostgreSQL database, not in the data directory: a second server on the
// same database (another data directory, as another host's replica) serves
// what the first one wrote, and writes to the same audit chain.
func TestRunOnPostgres(t *testing.T) {
	ctx := t.Context()
	url := testenv.Postgres(t)
	dirA := t.TempDir()
	addrA, token := serve(t, Config{Database: url, DataDir: dirA}, nil)
	if token == "" {
		t.Fatal("the first server on an empty database wrote no admin token")
	}
	a, err := client.New("http://"+addrA, token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}

	addrB, tokenB := serve(t, Config{Database: url}, nil)
	if tokenB != "" {
		t.Error("a second server on a database that has an admin token made another one")
	}
	b, err := client.New("http://"+addrB, token)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := b.Targets(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "web-01" {
		t.Fatalf("targets through the second server: %v, %v; want web-01", ts, err)
	}
	if _, err := b.CreateTarget(ctx, wire.TargetCreate{Name: "web-02"}); err != nil {
		t.Fatal(err)
	}
	if ts, err := a.Targets(ctx); err != nil || len(ts) != 2 {
		t.Fatalf("targets through the first server: %v, %v; want web-01 and web-02", ts, err)
	}
	v, err := a.VerifyAudit(ctx)
	if err != nil || !v.OK {
		t.Fatalf("audit verify after writes through both servers: %+v, %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(dirA, "jitgate.db")); err == nil {
		t.Error("an SQLite file was created beside a PostgreSQL database")
	}
}
