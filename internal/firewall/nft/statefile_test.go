package nft

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/testenv"
)

// manyGrants is rs with n single-address grants added (2001:db8:5::/112),
// deadlines a second apart in pairs so that they stay separate elements.
func manyGrants(rs firewall.Ruleset, from, n int, now time.Time) firewall.Ruleset {
	rs.Grants = slices.Clone(rs.Grants)
	for i := from; i < from+n; i++ {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 5, 14: byte(i >> 8), 15: byte(i)})
		rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(a, 128), Proto: ssh.Proto, Port: ssh.Port,
			Expires: now.Add(time.Hour + time.Duration(i%2)*time.Second)})
	}
	return rs
}

// kernelElements is what the kernel holds in the grant sets, as sorted text.
func kernelElements(t *testing.T, b *Backend) []string {
	t.Helper()
	st, err := b.State(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range st.Elements {
		out = append(out, fmt.Sprintf("%v-%v %v/%d", e.From, e.To, e.Proto, e.Port))
	}
	slices.Sort(out)
	return out
}

func wantElements(rs firewall.Ruleset, now time.Time) []string {
	var out []string
	for _, e := range rs.Elements(now) {
		out = append(out, fmt.Sprintf("%v-%v %v/%d", e.From, e.To, e.Proto, e.Port))
	}
	slices.Sort(out)
	return out
}

// TestRestartReconcilesFromStateFile: a restarted backend (a new process:
// new Backend, same state file) reconciles a table of 3,000 grants to a
// desired state with 200 grants gone and 200 new without listing the
// table, after full applies and after deltas; the kernel then holds exactly
// the desired elements. When anyone committed anything after the file was
// written (here an element added to our set with the nft tool: the
// extra grant an edit brought), or the file was cut short (a process killed
// while writing it), the file is not trusted: the restart lists the table
// and removes the extra element too.
func TestRestartReconcilesFromStateFile(t *testing.T) {
	ns := testenv.NewNetns(t)
	path := filepath.Join(t.TempDir(), "nft-state")
	open := stateBackends(t, ns, path)
	now := time.Now()
	rs := manyGrants(sampleRuleset(now), 0, 3000, now)
	first := open()
	mustApply(t, first, rs)
	// Deltas after the full apply are appended to the file.
	x := firewall.NewIndex(rs, now)
	extra := manyGrants(firewall.Ruleset{}, 5000, 3, now).Grants
	if _, err := first.ApplyDelta(context.Background(), x.Update(rs.Grants[:2], extra, now), now); err != nil {
		t.Fatal(err)
	}
	rs.Grants = append(slices.Clone(rs.Grants[2:]), extra...)
	first.Close()

	steps := []struct {
		name     string
		edit     string // an nft command run before the restart
		wantRead bool
	}{
		{"after a full apply and a delta", "", false},
		{"after a full apply", "", false},
		{"after an edit of the set", "add element inet jitgate hosts6 { 2001:db8:9::1 . tcp . 22 timeout 1h }", true},
		{"after a change to another table", "add table ip other", true},
		// An agent killed while writing the file: the last record is cut.
		{"after a torn write", "torn", true},
	}
	for i, step := range steps {
		switch step.edit {
		case "":
		case "torn":
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()-1); err != nil {
				t.Fatal(err)
			}
		default:
			load(t, ns, step.edit)
		}
		b := open()
		// 200 grants end, 200 new ones begin while the agent was down.
		rs = manyGrants(firewall.Ruleset{Protected: rs.Protected, Grants: rs.Grants[200:]}, 10000+i*1000, 200, now)
		res := mustApply(t, b, rs)
		if res.Added != 200 || res.Removed != 200+btoi(step.wantRead && i == 2) {
			t.Errorf("%s: %+v, want 200 added and 200 removed (and the edit's element)", step.name, res)
		}
		if read := b.reads > 0; read != step.wantRead {
			t.Errorf("%s: the restarted backend read the table: %v, want %v", step.name, read, step.wantRead)
		}
		if got, want := kernelElements(t, b), wantElements(rs, time.Now()); !slices.Equal(got, want) {
			t.Errorf("%s: the kernel holds %d elements, want exactly the %d desired", step.name, len(got), len(want))
		}
		b.Close()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s: no state file after the apply: %v", step.name, err)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestStateFileOfAnotherVersionIsNotTrusted: a new binary whose rules differ
// (their tag version bumped, as every change of the rules does) restarts on
// a table and a state file left by the old one, nobody having touched the
// ruleset in between (an upgrade: stop, replace, start). The file must not
// make it believe the chains hold its rules: the restart refills them, as
// it always did after a read of the table.
func TestStateFileOfAnotherVersionIsNotTrusted(t *testing.T) {
	ns := testenv.NewNetns(t)
	path := filepath.Join(t.TempDir(), "nft-state")
	open := stateBackends(t, ns, path)
	now := time.Now()
	rs := manyGrants(sampleRuleset(now), 0, 100, now)
	old := open()
	mustApply(t, old, rs)
	old.Close()

	defer func(p string) { ruleTagPrefix = p }(ruleTagPrefix)
	ruleTagPrefix = "jitgate:v99:"
	b := open()
	mustApply(t, b, rs)
	if table := listTable(t, ns); !strings.Contains(table, "jitgate:v99:") || strings.Contains(table, "jitgate:v3:") {
		t.Errorf("after the upgrade the table still holds the old binary's rules:\n%s", table)
	}
}

// TestStateFileOfARecreatedNamespaceIsNotTrusted: a network namespace's
// inode number is reused once it is gone (a container restarted, `ip netns
// delete` and `add`), and a fresh namespace's ruleset generation starts
// again from the bottom. A state file written in the old namespace must not
// be trusted in the new one even when boot, inode and generation all match:
// here the new namespace's table (restored from an old save, say) holds an
// element the file does not know of, a grant revoked long ago, and the
// restarted backend must remove it.
func TestStateFileOfARecreatedNamespaceIsNotTrusted(t *testing.T) {
	testenv.RequireKernel(t)
	path := filepath.Join(t.TempDir(), "nft-state")
	now := time.Now()
	rs := manyGrants(sampleRuleset(now), 0, 20, now)

	a, inoA, deleteA := rawNetns(t)
	first, err := New(WithNetNSFd(int(a.Fd())), WithStateFile(path))
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, first, rs)
	// Commits by others first, so that the file's generation is one the
	// new namespace can reach after its own setup.
	for range 10 {
		runNft(t, a, "add table ip pad\ndelete table ip pad\n")
	}
	rs = manyGrants(rs, 100, 1, now)
	mustApply(t, first, rs)
	fileGen := first.cacheGen
	first.Close()
	deleteA()

	// Namespaces are made (and held, so that each takes another number)
	// until one gets the old one's inode.
	var b *os.File
	for i := 0; i < 400 && b == nil; i++ {
		f, ino, _ := rawNetns(t)
		if ino == inoA {
			b = f
		}
	}
	if b == nil {
		t.Logf("no new namespace got inode %d back (others took it): the reuse is not exercised this run", inoA)
		return
	}
	restored := manyGrants(rs, 200, 1, now) // the revoked grant
	other, err := New(WithNetNSFd(int(b.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	mustApply(t, other, restored)
	for {
		other.mu.Lock()
		gen, err := other.genID()
		other.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if gen == fileGen {
			break
		}
		if gen > fileGen {
			t.Fatalf("the new namespace is at generation %d, past the file's %d", gen, fileGen)
		}
		runNft(t, b, "add table ip pad\ndelete table ip pad\n")
	}

	restarted, err := New(WithNetNSFd(int(b.Fd())), WithStateFile(path))
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	mustApply(t, restarted, rs)
	if got, want := kernelElements(t, restarted), wantElements(rs, time.Now()); !slices.Equal(got, want) {
		t.Errorf("the kernel holds %d elements, want exactly the %d desired (the revoked grant stayed open: the old namespace's file was trusted)", len(got), len(want))
	}
}

// rawNetns makes a network namespace with `ip netns`, returns it open, its
// inode number, and a function that deletes it (also run at cleanup).
func rawNetns(t *testing.T) (*os.File, uint64, func()) {
	t.Helper()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("jgtest-sf-%x", rnd)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	f, err := os.Open(filepath.Join("/var/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	done := false
	del := func() {
		if done {
			return
		}
		done = true
		f.Close()
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete: %v: %s", err, out)
		}
	}
	t.Cleanup(del)
	return f, st.Ino, del
}

func runNft(t *testing.T, ns *os.File, script string) {
	t.Helper()
	cmd := exec.Command("nsenter", "--net=/proc/self/fd/3", "nft", "-f", "-")
	cmd.ExtraFiles = []*os.File{ns}
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
}

// TestClockStepDoesNotKeepExpiredElements: the kernel counts element
// timeouts on its own clock, which neither a step of the wall clock nor a
// suspend moves, so after the wall clock jumped ahead the kernel still holds
// elements whose deadline has passed by it. A backend that plans against its
// cache (in the process, or loaded from the state file after a restart) must
// not take them for expired and gone: the restarted or running backend is
// told the time is a minute later (a step, or a suspend of a minute), and the
// grant that ended then must be gone from the kernel.
func TestClockStepDoesNotKeepExpiredElements(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			ns := testenv.NewNetns(t)
			path := filepath.Join(t.TempDir(), "nft-state")
			open := stateBackends(t, ns, path)
			now := time.Now()
			rs := sampleRuleset(now)
			rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.MustParsePrefix("2001:db8:7::1/128"), Proto: ssh.Proto, Port: ssh.Port,
				Expires: now.Add(10 * time.Second)})
			b := open()
			if _, err := b.Apply(context.Background(), rs, now); err != nil {
				t.Fatal(err)
			}
			if restart {
				b.Close()
				b = open()
			}
			// The wall clock a minute ahead of the kernel's (a step, or a
			// suspend): a reading without Go's monotonic one, which would
			// tell the backend that no minute went by.
			later := time.Now().Add(time.Minute).Round(0)
			if !restart {
				// A delta names no expired grant: it must make the caller
				// apply the whole state instead, which reads the table.
				if _, err := b.ApplyDelta(context.Background(), firewall.Delta{}, later); !errors.Is(err, firewall.ErrNeedFullApply) {
					t.Errorf("ApplyDelta after the clock moved: %v, want ErrNeedFullApply", err)
				}
			}
			if _, err := b.Apply(context.Background(), rs, later); err != nil {
				t.Fatal(err)
			}
			if got, want := kernelElements(t, b), wantElements(rs, later); !slices.Equal(got, want) {
				t.Errorf("after the clock moved a minute ahead the kernel holds %d elements, want the %d live then (the grant that ended stayed open):\n%v", len(got), len(want), got)
			}
		})
	}
}

// TestKilledBetweenBatchAndStateFile: an agent killed after the kernel
// committed a batch (here one adding a grant) but before the state file
// recorded it, the grant revoked while the agent is down: the restarted
// backend must not trust the file, which misses the element, and must
// remove it. (beforeFlush set makes applyOnce skip its cache and file
// update after the batch, as a kill at that point would.)
func TestKilledBetweenBatchAndStateFile(t *testing.T) {
	ns := testenv.NewNetns(t)
	path := filepath.Join(t.TempDir(), "nft-state")
	open := stateBackends(t, ns, path)
	now := time.Now()
	rs := manyGrants(sampleRuleset(now), 0, 50, now)
	first := open()
	mustApply(t, first, rs)
	first.beforeFlush = func(*nftables.Conn, layout) {}
	mustApply(t, first, manyGrants(rs, 300, 1, now)) // committed, not recorded
	first.Close()

	b := open()
	mustApply(t, b, rs) // the grant was revoked meanwhile
	if got, want := kernelElements(t, b), wantElements(rs, time.Now()); !slices.Equal(got, want) {
		t.Errorf("the kernel holds %d elements, want exactly the %d desired (the revoked grant stayed)", len(got), len(want))
	}
	if b.reads == 0 {
		t.Error("the restarted backend trusted a state file a generation behind the kernel")
	}
}

// TestKernelEmptiedUnderTheStateFile: the kernel loses elements the cache
// and the state file hold (a set flushed, the table deleted, the whole
// ruleset flushed), while the backend runs or while it is down: the next
// Apply must add every desired element back, not believe them there.
func TestKernelEmptiedUnderTheStateFile(t *testing.T) {
	for _, tc := range []struct {
		name, edit string
		restart    bool
	}{
		{"set flushed, running", "flush set inet jitgate hosts6", false},
		{"set flushed, restarted", "flush set inet jitgate hosts6", true},
		{"table deleted, running", "delete table inet jitgate", false},
		{"table deleted, restarted", "delete table inet jitgate", true},
		{"ruleset flushed, restarted", "flush ruleset", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NewNetns(t)
			path := filepath.Join(t.TempDir(), "nft-state")
			open := stateBackends(t, ns, path)
			now := time.Now()
			rs := manyGrants(sampleRuleset(now), 0, 200, now)
			b := open()
			mustApply(t, b, rs)
			load(t, ns, tc.edit)
			if tc.restart {
				b.Close()
				b = open()
			}
			mustApply(t, b, rs)
			if got, want := kernelElements(t, b), wantElements(rs, time.Now()); !slices.Equal(got, want) {
				t.Errorf("the kernel holds %d elements, want the %d desired back", len(got), len(want))
			}
		})
	}
}

// TestTimeoutsCountFromTheCallersNow: the agent reads its clock, then builds
// the ruleset (at a million grants that takes seconds), then calls Apply with
// the reading. Each element's kernel timeout must be its deadline minus the
// time it is given to the kernel, not minus the stale reading: here the
// reading is 10 s old and the grant ends 20 s from now; a timeout counted from
// the reading kept it open 10 s past its deadline.
func TestTimeoutsCountFromTheCallersNow(t *testing.T) {
	b, _ := newTestBackend(t)
	now := time.Now().Add(-10 * time.Second) // keeps the monotonic reading: taken 10 s ago
	deadline := now.Add(30 * time.Second)
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{
		{Source: netip.MustParsePrefix("192.0.2.9/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: deadline}}}
	if _, err := b.Apply(context.Background(), rs, now); err != nil {
		t.Fatal(err)
	}
	st, err := b.State(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Elements) != 1 {
		t.Fatalf("the kernel holds %d elements, want 1", len(st.Elements))
	}
	if off := st.Elements[0].Expires.Sub(deadline); off.Abs() > time.Second {
		t.Errorf("the kernel drops the grant %s after its deadline, want within a second of it", off.Round(time.Millisecond))
	}
}

// stateBackends returns a function that opens a new Backend (a restarted
// agent: new process, same state file) on ns with the state file at path;
// each is closed when the test ends.
func stateBackends(t *testing.T, ns *testenv.Netns, path string) func() *Backend {
	t.Helper()
	return func() *Backend {
		b, err := New(WithNetNSFd(ns.FD()), WithStateFile(path))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// TestStateFileDiffedWithoutACopy: a restarted backend diffs the state file
// against the desired sets as it reads it (diffState) instead of reading it
// into a copy of the table: the plan is the one the copy gives (the same
// state; 200 grants gone and 200 new; deadlines moved beyond Tolerance and
// within it; the file holding a full write and a delta's records), the
// desired sets keep no mark, and what it keeps of a file equal to the
// desired state is a few kilobytes where the copy was ~90 bytes an element
// (the marks are set under the desired elements' own idents: under the
// file's, the map kept those as its keys, ~25 bytes an element).
func TestStateFileDiffedWithoutACopy(t *testing.T) {
	ns := testenv.NewNetns(t)
	path := filepath.Join(t.TempDir(), "nft-state")
	open := stateBackends(t, ns, path)
	now := time.Now()
	rs := manyGrants(sampleRuleset(now), 0, 3000, now)
	first := open()
	mustApply(t, first, rs)
	x := firewall.NewIndex(rs, now)
	extra := manyGrants(firewall.Ruleset{}, 5000, 3, now).Grants
	if _, err := first.ApplyDelta(context.Background(), x.Update(rs.Grants[:2], extra, now), now); err != nil {
		t.Fatal(err)
	}
	rs.Grants = append(rs.Grants[2:len(rs.Grants):len(rs.Grants)], extra...)
	moved := func(d time.Duration) firewall.Ruleset {
		v := rs
		v.Grants = slices.Clone(rs.Grants)
		for i := 10; i < 110; i++ {
			v.Grants[i].Expires = v.Grants[i].Expires.Add(d)
		}
		return v
	}
	changed := manyGrants(rs, 7000, 200, now)
	changed.Grants = changed.Grants[200:]
	for _, tc := range []struct {
		name string
		rs   firewall.Ruleset
	}{{"same", rs}, {"200 gone and 200 new", changed}, {"deadlines moved 1 s", moved(time.Second)}, {"deadlines moved 10 ms", moved(10 * time.Millisecond)}} {
		t.Run(tc.name, func(t *testing.T) {
			b := open()
			gen, err := b.genID()
			if err != nil {
				t.Fatal(err)
			}
			off := callerOffset(now)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			where, err := b.namespaceID()
			if err != nil {
				t.Fatal(err)
			}
			base := liveHeap()
			copied, fileGen, _, _, err := readState(bufio.NewReader(f), where)
			if err != nil || fileGen != gen {
				t.Fatalf("the state file: generation %d (kernel %d), %v", fileGen, gen, err)
			}
			copyKept := liveHeap() - base
			want := makePlan(copied.withoutExpired(now), desiredState(tc.rs, now, false))
			copied = kernelState{}

			d := desiredState(tc.rs, now, false)
			base = liveHeap()
			held, ok := b.diffState(gen, true, off, d, now)
			if !ok {
				t.Fatal("the state file was not trusted")
			}
			diffKept := liveHeap() - base
			got := makePlan(held, d)
			d.clearHeld()
			for name, s := range d.sets {
				for _, e := range s.byID {
					if e.held() {
						t.Fatalf("set %s: an element still marked held", name)
					}
				}
			}
			if got.res != want.res || got.rebuild != want.rebuild || got.rules != want.rules {
				t.Errorf("plan: %+v rebuild %t rules %t; the copy's: %+v rebuild %t rules %t", got.res, got.rebuild, got.rules, want.res, want.rebuild, want.rules)
			}
			for _, m := range []struct {
				what      string
				got, want map[string][]elem
			}{{"add", got.add, want.add}, {"del", got.del, want.del}} {
				ids := func(in map[string][]elem) []string {
					var out []string
					for name, els := range in {
						for _, e := range els {
							out = append(out, fmt.Sprintf("%s %x %d", name, e.ident, e.dl&^flagBits))
						}
					}
					slices.Sort(out)
					return out
				}
				if g, w := ids(m.got), ids(m.want); !slices.Equal(g, w) {
					t.Errorf("%s: %d elements, the copy's %d", m.what, len(g), len(w))
				}
			}
			if tc.name == "same" {
				if !got.empty() {
					t.Errorf("a plan for the same state: %+v", got.res)
				}
				t.Logf("kept of the file: a copy %d bytes, the diff %d", copyKept, diffKept)
				if copyKept < 200_000 || diffKept > 20_000 {
					t.Errorf("kept of the file: a copy %d bytes, the diff %d; want the copy above 200,000 and the diff below 20,000", copyKept, diffKept)
				}
			}
			runtime.KeepAlive(held)
		})
	}
}

// liveHeap is the heap live after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestClockStepCaughtWithoutACache: the wall clock steps a minute ahead
// (or the machine resumes from a suspend) after someone else's commit made
// a delta drop the backend's cache. A grant revoked then, whose deadline
// the stepped clock has passed while the kernel (counting on its own
// clock) still holds it, is one the Index deletes nothing for: a delta must
// make the caller apply the whole state, which reads the table and removes
// it, with or without a cache. (Before, only a backend with a cache
// checked the clock: the revoked grant stayed open until its kernel
// timeout.)
func TestClockStepCaughtWithoutACache(t *testing.T) {
	b, ns := newTestBackend(t)
	now := time.Now()
	rs := sampleRuleset(now)
	revoked := firewall.Grant{Source: netip.MustParsePrefix("2001:db8:7::1/128"), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(10 * time.Second)}
	rs.Grants = append(rs.Grants, revoked)
	if _, err := b.Apply(context.Background(), rs, now); err != nil {
		t.Fatal(err)
	}
	x := firewall.NewIndex(rs, now)
	other := firewall.Grant{Source: netip.MustParsePrefix("203.0.113.9/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)}
	load(t, ns, "add table inet other") // anyone's commit: the delta after it drops the cache
	if _, err := b.ApplyDelta(context.Background(), x.Update(nil, []firewall.Grant{other}, now), now); err != nil {
		t.Fatalf("ApplyDelta: %v", err)
	}
	if b.cache != nil {
		t.Fatal("a delta after someone else's commit kept the cache")
	}
	rs.Grants = append(rs.Grants, other)

	later := time.Now().Add(time.Minute).Round(0) // the wall clock a minute ahead of the kernel's
	rs.Grants = slices.DeleteFunc(rs.Grants, func(g firewall.Grant) bool { return g == revoked })
	_, err := b.ApplyDelta(context.Background(), x.Update([]firewall.Grant{revoked}, nil, later), later)
	if err != nil && !errors.Is(err, firewall.ErrNeedFullApply) {
		t.Fatalf("ApplyDelta: %v", err)
	}
	if err != nil { // what the agent does then
		if _, err := b.Apply(context.Background(), rs, later); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := kernelElements(t, b), wantElements(rs, later); !slices.Equal(got, want) {
		t.Errorf("after a revocation on a clock stepped a minute ahead the kernel holds %d elements, want %d (the revoked grant stayed open):\n%v", len(got), len(want), got)
	}
}

// TestForeignAddBetweenDeltaAndGenerationCheck: someone adds an element to
// our grant set by hand (a permanent one) in the moment between a delta's
// batch and its check of the ruleset generation. The generation then moved
// by two: the cache must not follow the delta, Intact must say no, and the
// next Apply (the agent's resync) must remove the element; a restart on
// the state file must not trust the file either.
func TestForeignAddBetweenDeltaAndGenerationCheck(t *testing.T) {
	ns := testenv.NewNetns(t)
	path := filepath.Join(t.TempDir(), "nft-state")
	b, err := New(WithNetNSFd(ns.FD()), WithStateFile(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	now := time.Now()
	rs := sampleRuleset(now)
	mustApply(t, b, rs)
	x := firewall.NewIndex(rs, now)
	g := firewall.Grant{Source: netip.MustParsePrefix("203.0.113.9/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)}
	b.afterDelta = func() { load(t, ns, "add element inet jitgate hosts4 { 203.0.113.66 . tcp . 22 }") }
	if _, err := b.ApplyDelta(context.Background(), x.Update(nil, []firewall.Grant{g}, now), now); err != nil {
		t.Fatalf("ApplyDelta: %v", err)
	}
	b.afterDelta = nil
	rs.Grants = append(rs.Grants, g)
	if b.cache != nil {
		t.Error("the cache followed a delta after which someone else committed")
	}
	if ok, err := b.Intact(context.Background(), time.Now()); err != nil || ok {
		t.Errorf("Intact = %v, %v after someone else's commit; want false", ok, err)
	}
	st, err := b.State(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Allows(netip.MustParseAddr("203.0.113.66"), ssh.Proto, ssh.Port, time.Now()) {
		t.Fatal("the hand-added element is not in the kernel: the test added nothing")
	}

	// A restart on the state file: the file must not be trusted.
	r, err := New(WithNetNSFd(ns.FD()), WithStateFile(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	for _, be := range []*Backend{r, b} {
		if _, err := be.Apply(context.Background(), rs, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got, want := kernelElements(t, be), wantElements(rs, time.Now()); !slices.Equal(got, want) {
			t.Errorf("after the next Apply the kernel holds %v, want %v (the hand-added element stayed)", got, want)
		}
		load(t, ns, "add element inet jitgate hosts4 { 203.0.113.66 . tcp . 22 }")
	}
}
