package agent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// set replaces the server's state and wakes its long-polls.
func (m *memServer) set(ds wire.DesiredState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ds = ds
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *memServer) reportsSnapshot() []wire.AgentReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.reports)
}

var (
	ssh = firewall.PortKey{Proto: firewall.TCP, Port: 22}
	rdp = firewall.PortKey{Proto: firewall.TCP, Port: 3389}
)

// TestRevisionGoingBackFailsClosed: a server whose revision goes below one
// the agent applied (its database was restored from an older copy) is not
// obeyed. The agent removes every grant, keeps every port it protected
// (also those the old state no longer protects), reports its high-water
// mark, and takes the server's state again once its revision is above it.
func TestRevisionGoingBackFailsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		backend := &fakeBackend{}
		live := wire.GrantEntry{Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}
		current := protectedSSH(5, live)
		current.Protected = append(current.Protected, wire.Port{Port: 3389, Protocol: "tcp"})
		srv := newMemServer(current)
		var logs syncBuffer
		a, stop := runInBubble(t, srv, backend, Config{Logger: testLogger(&logs)})
		time.Sleep(time.Second)
		synctest.Wait()
		if st := a.Status(); st.AppliedRevision != 5 {
			t.Fatalf("Status() = %+v, want revision 5 applied", st)
		}

		// The database goes back to revision 3: it still holds a grant for
		// srcB that was revoked since, and 3389 was not protected yet.
		stale := wire.GrantEntry{Source: srcB + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}
		srv.set(protectedSSH(3, live, stale))
		time.Sleep(30 * time.Second) // the old server's long-poll wait, then the answer
		synctest.Wait()
		state, _, _ := backend.snapshot()
		now := time.Now()
		for _, src := range []string{srcA, srcB} {
			if state.Allows(netip.MustParseAddr(src), firewall.TCP, 22, now) {
				t.Errorf("%s -> 22/tcp passes after the server's revision went back to 3; state %+v", src, state)
			}
		}
		if !slices.Equal(state.Protected, []firewall.PortKey{ssh, rdp}) {
			t.Errorf("protected after the rollback = %v, want 22/tcp and 3389/tcp (protection is never dropped)", state.Protected)
		}
		reps := srv.reportsSnapshot()
		last := reps[len(reps)-1]
		if last.HighWater != 5 || last.Revision != 3 || !strings.Contains(last.Error, "went back") {
			t.Errorf("last report = %+v, want revision 3 refused with high water 5 and the reason", last)
		}
		if st := a.Status(); st.AppliedRevision != 5 || !strings.Contains(st.LastError, "went back") {
			t.Errorf("Status() = %+v, want revision 5 still the applied one and the rollback as the error", st)
		}
		if n := strings.Count(logs.String(), "revision went back"); n != 1 {
			t.Errorf("the rollback was logged %d times, want once:\n%s", n, logs.String())
		}

		// The server moves past the mark (it ended its live grants): obeyed again.
		srv.set(protectedSSH(6, wire.GrantEntry{Source: srcB + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}))
		time.Sleep(15 * time.Second)
		synctest.Wait()
		state, _, _ = backend.snapshot()
		if !state.Allows(netip.MustParseAddr(srcB), firewall.TCP, 22, time.Now()) {
			t.Errorf("revision 6 not applied after the server moved past the mark; state %+v", state)
		}
		if st := a.Status(); st.AppliedRevision != 6 || st.LastError != "" {
			t.Errorf("Status() = %+v, want revision 6 and no error", st)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestRestartedAgentRemembersAppliedRevision: the high-water mark survives
// a restart of the agent (it lives in the state directory), and a restarted
// agent keeps the ports the kernel protects even when the old state does not
// name them.
func TestRestartedAgentRemembersAppliedRevision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		backend := &fakeBackend{}
		grant := wire.GrantEntry{Source: srcA + "/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Now().Add(time.Hour)}
		first := protectedSSH(7, grant)
		first.Protected = append(first.Protected, wire.Port{Port: 3389, Protocol: "tcp"})
		srv := newMemServer(first)
		_, stop := runInBubble(t, srv, backend, Config{StateDir: dir})
		time.Sleep(time.Second)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatalf("Run = %v", err)
		}

		// Restarted against a server whose database went back to revision 2,
		// where the grant is live again and only 22 is protected.
		old := newMemServer(protectedSSH(2, grant))
		a, stop := runInBubble(t, old, backend, Config{StateDir: dir})
		time.Sleep(time.Second)
		synctest.Wait()
		state, _, _ := backend.snapshot()
		if state.Allows(netip.MustParseAddr(srcA), firewall.TCP, 22, time.Now()) || len(state.Elements) != 0 {
			t.Errorf("a restarted agent applied an older revision's grant: state %+v", state)
		}
		if !slices.Equal(state.Protected, []firewall.PortKey{ssh, rdp}) {
			t.Errorf("protected = %v, want 22/tcp and 3389/tcp kept from the kernel", state.Protected)
		}
		reps := old.reportsSnapshot()
		if len(reps) == 0 || reps[0].HighWater != 7 {
			t.Errorf("reports = %+v, want the refusal with high water 7", reps)
		}
		if st := a.Status(); st.AppliedRevision != 0 {
			t.Errorf("Status() = %+v, want nothing applied", st)
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// wantMarkRefused runs the agent, inside a synctest bubble, with the state
// directory dir whose applied-revision file the caller wrote, and checks that
// it stops with an error containing want (what names the refusal in the
// failure message) and reports nothing to the server.
func wantMarkRefused(t *testing.T, dir, want, what string) {
	t.Helper()
	backend := &fakeBackend{}
	srv := newMemServer(protectedSSH(3))
	_, stop := runInBubble(t, srv, backend, Config{StateDir: dir})
	time.Sleep(time.Second)
	synctest.Wait()
	err := stop()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run = %v, want %s", err, what)
	}
	if reps := srv.reportsSnapshot(); len(reps) != 0 {
		t.Errorf("reports = %+v, want none", reps)
	}
}

// TestImpossibleAppliedRevisionRefused: an applied-revision file claiming a
// revision no server can send (above wire.MaxRevision: tampered, or written
// by something else) is not a mark. The agent stops with the file named
// instead of reporting it (the server refuses such a claim) and touches
// nothing: the kernel keeps the gate it has.
func TestImpossibleAppliedRevisionRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		mark := fmt.Sprintf(highWaterFormat, int64(wire.MaxRevision)+1, "web-1")
		if err := os.WriteFile(filepath.Join(dir, highWaterName), []byte(mark), 0o600); err != nil {
			t.Fatal(err)
		}
		wantMarkRefused(t, dir, "not a revision mark", "the mark refused")
	})
}

// TestEndlessAppliedRevisionRefused: a mark file that never ends (a link to
// /dev/zero) is refused after a few kilobytes instead of being read into
// memory until the agent dies; the agent applies nothing without its mark.
func TestEndlessAppliedRevisionRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Symlink("/dev/zero", filepath.Join(dir, highWaterName)); err != nil {
			t.Fatal(err)
		}
		wantMarkRefused(t, dir, "larger than", "the endless mark refused")
	})
}
