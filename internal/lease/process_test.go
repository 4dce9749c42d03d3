package lease

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// helperEnv makes the test binary a replica holding the "sweeper" lease on
// the SQLite database it names (TestMain).
const helperEnv = "JITGATE_LEASE_HELPER_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helperReplica(path))
	}
	os.Exit(m.Run())
}

// helperReplica runs the sweeper's lease as replica "dying" and prints
// "running" when its job starts; it runs until killed.
func helperReplica(path string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	err = Run(ctx, st, Config{Name: "sweeper", Holder: "dying"}, func(ctx context.Context) {
		fmt.Println("running")
		<-ctx.Done()
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestTakeoverAfterKill: two real processes share one database (SQLite in
// WAL mode, as two replicas share PostgreSQL). While the first holds the
// sweeper's lease the second does not run the job; after kill -9 of the
// first (no release: its row simply stops being renewed) the second takes
// the lease over and runs the job.
func TestTakeoverAfterKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jitgate.db")
	ctx := t.Context()
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig()) // migrated before the helper opens it
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "running" {
		t.Fatalf("the helper replica did not start its job: %q %v", sc.Text(), sc.Err())
	}

	refusals := &countRefusals{Store: st}
	started := make(chan time.Time, 1)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, refusals, Config{Name: "sweeper", Holder: "survivor"}, func(ctx context.Context) {
			started <- time.Now()
			<-ctx.Done()
		})
	}()
	defer func() { stop(); <-done }()

	// The survivor asks for the lease every second and is refused while the
	// helper renews it.
	waitFor(t, 10*time.Second, func() bool { return refusals.n.Load() >= 3 })
	select {
	case <-started:
		t.Fatal("the survivor ran the job while the helper holds the lease")
	default:
	}
	ls, err := st.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-started:
		t.Logf("takeover %s after kill -9 (the dead holder's claim had %s left)", at.Sub(killed).Round(time.Millisecond), ls[0].Expires.Sub(killed).Round(time.Millisecond))
	case <-time.After(DefaultTTL + 10*time.Second):
		t.Fatal("the survivor did not take the lease over after the holder was killed")
	}
	ls, err = st.ListLeases(ctx)
	if err != nil || len(ls) != 1 || ls[0].Holder != "survivor" {
		t.Errorf("leases after takeover = %+v, %v; want sweeper held by survivor", ls, err)
	}
}

// countRefusals counts the lease requests the store refused.
type countRefusals struct {
	*store.Store
	n atomic.Int64
}

func (c *countRefusals) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (store.Lease, bool, error) {
	l, ok, err := c.Store.AcquireLease(ctx, name, holder, now, ttl)
	if err == nil && !ok {
		c.n.Add(1)
	}
	return l, ok, err
}

func waitFor(t *testing.T, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
