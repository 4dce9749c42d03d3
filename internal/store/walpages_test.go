package store_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// walReader follows the WAL of a SQLite database (path + "-wal") and
// returns the pages each new commit wrote: what a commit costs the disk is
// its frames (a 24-byte header and a page each, one pwrite per part, then
// the fsync), so a change to the write path's SQL is judged by them.
type walReader struct {
	path  string
	off   int64
	salts [8]byte
	fresh bool // the WAL was empty at the mark: its salts are the next header's
}

// walHeader is the WAL file's header size, walFrameHeader a frame's.
const walHeader, walFrameHeader = 32, 24

// newWALReader starts following path's WAL at its current end.
func newWALReader(tb testing.TB, path string) *walReader {
	tb.Helper()
	w := &walReader{path: path}
	w.mark(tb)
	return w
}

// mark moves the reader to the WAL's current end (and its current salts:
// a checkpoint that restarted the WAL changed them).
func (w *walReader) mark(tb testing.TB) {
	tb.Helper()
	f, err := os.Open(w.path + "-wal")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var h [walHeader]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		// Empty (a checkpoint truncated it, or nothing was written yet):
		// the next commit writes the header and starts after it.
		w.off, w.fresh = walHeader, true
		return
	}
	copy(w.salts[:], h[16:24])
	w.off, w.fresh = w.end(tb, f, h), false
}

// end is the offset after the last valid frame (SQLite does not truncate
// the file when it restarts the WAL: frames of an older generation, with
// other salts, may follow).
func (w *walReader) end(tb testing.TB, f *os.File, h [walHeader]byte) int64 {
	tb.Helper()
	size := int64(binary.BigEndian.Uint32(h[8:12]))
	off := int64(walHeader)
	var fh [walFrameHeader]byte
	for {
		if _, err := f.ReadAt(fh[:], off); err != nil {
			return off
		}
		if !slices.Equal(fh[8:16], h[16:24]) {
			return off
		}
		off += walFrameHeader + size
	}
}

// next returns the page numbers of the frames written since the last call
// (or newWALReader), in order, and how many commits they hold: -1 when a
// checkpoint restarted the WAL in between (the frames before the restart
// are gone).
func (w *walReader) next(tb testing.TB) (pages []uint32, commits int) {
	tb.Helper()
	f, err := os.Open(w.path + "-wal")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var h [walHeader]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		tb.Fatalf("reading the WAL's header: %v", err)
	}
	if w.fresh {
		copy(w.salts[:], h[16:24])
		w.fresh = false
	}
	if !slices.Equal(h[16:24], w.salts[:]) {
		// A checkpoint restarted the WAL: the frames before are gone.
		// commits -1 says so; the benchmark leaves the sample out.
		return nil, -1
	}
	size := int64(binary.BigEndian.Uint32(h[8:12]))
	var fh [walFrameHeader]byte
	for {
		if _, err := f.ReadAt(fh[:], w.off); err != nil {
			break
		}
		if !slices.Equal(fh[8:16], h[16:24]) {
			break
		}
		pages = append(pages, binary.BigEndian.Uint32(fh[0:4]))
		if binary.BigEndian.Uint32(fh[4:8]) != 0 {
			commits++
		}
		w.off += walFrameHeader + size
	}
	return pages, commits
}

// pageOwners maps every page of the database at path (as its WAL has it
// now) to the table or index whose b-tree holds it (dbstat), "freelist"
// for the free pages' trunk (SQLite's freelist is not a b-tree).
func pageOwners(tb testing.TB, ctx context.Context, db *sql.DB) map[uint32]string {
	tb.Helper()
	rows, err := db.QueryContext(ctx, `SELECT name, pageno FROM dbstat`)
	if err != nil {
		tb.Fatalf("dbstat: %v", err)
	}
	defer rows.Close()
	owners := map[uint32]string{}
	for rows.Next() {
		var name string
		var page uint32
		if err := rows.Scan(&name, &page); err != nil {
			tb.Fatal(err)
		}
		owners[page] = name
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return owners
}

// ownersOf names the b-tree of each page ("page N" for a page dbstat does
// not list: a freelist page).
func ownersOf(pages []uint32, owners map[uint32]string) []string {
	names := make([]string, len(pages))
	for i, p := range pages {
		if n, ok := owners[p]; ok {
			names[i] = n
		} else {
			names[i] = fmt.Sprintf("page %d (free list)", p)
		}
	}
	return names
}

// btreeSet is the sorted distinct names of names.
func btreeSet(names []string) []string {
	s := slices.Clone(names)
	sort.Strings(s)
	return slices.Compact(s)
}

// pageTable renders per-b-tree page counts of n operations, most first.
func pageTable(counts map[string]int, n int) string {
	type row struct {
		name string
		n    int
	}
	var rs []row
	total := 0
	for k, v := range counts {
		rs = append(rs, row{k, v})
		total += v
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].n > rs[j].n || rs[i].n == rs[j].n && rs[i].name < rs[j].name })
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.2f |\n", r.name, float64(r.n)/float64(n))
	}
	fmt.Fprintf(&b, "| total | %.2f |\n", float64(total)/float64(n))
	return b.String()
}

// BenchmarkWALPages measures the pages (WAL frames) one request's two
// writes commit at the load benchmark's shape (seedWritePath: 10,000
// targets, 100,000 live grants): its creation, alone in its transaction,
// and the agent's report that activates it, alone in its own. It reports
// the frames of each (frames/create, frames/report) and logs, per table and
// index, the pages each wrote (dbstat): where a commit's pages come from.
func BenchmarkWALPages(b *testing.B) {
	ctx := context.Background()
	seedOnce.Do(func() { seeded, seedErr = seedWritePath(ctx) })
	if seedErr != nil {
		b.Fatal(seedErr)
	}
	path := filepath.Join(b.TempDir(), "jitgate.db")
	if err := os.WriteFile(path, seeded, 0o600); err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	i := 0
	request := func() (create, report []uint32, ok bool) {
		b.Helper()
		i++
		target := fmt.Sprintf("seed-%06d", 1+(i*7919)%1000)
		src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		w := newWALReader(b, path)
		r, err := st.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i%200)}, target,
			policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "bench"},
			policy.DefaultLimits(), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		create, commits := w.next(b)
		if commits != 1 && commits != -1 {
			b.Fatalf("a creation: %d commits", commits)
		}
		ok = commits == 1
		w.mark(b)
		acts, err := st.ReportApplied(ctx, target, r.Revision, "", nil, "", time.Now())
		if err != nil || len(acts) != 1 {
			b.Fatalf("report: %v, %v", acts, err)
		}
		report, commits = w.next(b)
		if commits != 1 && commits != -1 {
			b.Fatalf("a report: %d commits", commits)
		}
		return create, report, ok && commits == 1
	}
	for range 20 { // the writer's cache and the pages the first writes split
		request()
	}
	var creates, reports [][]uint32
	b.ResetTimer()
	for range b.N {
		if c, r, ok := request(); ok {
			creates, reports = append(creates, c), append(reports, r)
		}
	}
	b.StopTimer()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	owners := pageOwners(b, ctx, db)
	count := func(ops [][]uint32) (map[string]int, int) {
		m, n := map[string]int{}, 0
		for _, pages := range ops {
			for _, name := range ownersOf(pages, owners) {
				m[name]++
			}
			n += len(pages)
		}
		return m, n
	}
	cm, cn := count(creates)
	rm, rn := count(reports)
	n := len(creates)
	b.ReportMetric(float64(cn)/float64(n), "frames/create")
	b.ReportMetric(float64(rn)/float64(n), "frames/report")
	b.Logf("pages per creation (%d):\n%s", n, pageTable(cm, n))
	b.Logf("pages per report (%d):\n%s", n, pageTable(rm, n))
}

// BenchmarkRequestStatements times each statement of a request's two
// writes at the load benchmark's shape (seedWritePath), each write alone in
// its transaction: the creation and the agent's report that activates it.
// It reports the statements' summed time per creation and per report
// (stmt-us/create, stmt-us/report: the writer's work before the commit),
// the sum of each statement's median (p50-us/create, p50-us/report) and
// logs the median of each statement. The report carries addresses and a
// version, as the agent's do.
func BenchmarkRequestStatements(b *testing.B) {
	ctx := context.Background()
	seedOnce.Do(func() { seeded, seedErr = seedWritePath(ctx) })
	if seedErr != nil {
		b.Fatal(seedErr)
	}
	path := filepath.Join(b.TempDir(), "jitgate.db")
	if err := os.WriteFile(path, seeded, 0o600); err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var (
		phase string // "create" or "report" while one runs
		times = map[string]map[string][]time.Duration{"create": {}, "report": {}}
		total = map[string]time.Duration{}
	)
	label := func(q string) string {
		q = strings.Join(strings.Fields(q), " ")
		if len(q) > 70 {
			q = q[:70] + "…"
		}
		return q
	}
	i := 0
	request := func() {
		i++
		target := fmt.Sprintf("seed-%06d", 1+(i*7919)%1000)
		src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		phase = "create"
		r, err := st.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i%200)}, target,
			policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "bench"},
			policy.DefaultLimits(), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		phase = "report"
		// As the agent reports: with its addresses and version.
		if acts, err := st.ReportApplied(ctx, target, r.Revision, "", []string{"198.51.100.10"}, "1.0.0", time.Now()); err != nil || len(acts) != 1 {
			b.Fatalf("report: %v, %v", acts, err)
		}
		phase = ""
	}
	for range 50 {
		request()
	}
	// Only the writer runs statements while a write runs here (the
	// callers wait for it), so the timer needs no lock.
	stop := store.TimeStatements(func(q string, d time.Duration) {
		if phase == "" {
			return
		}
		l := label(q)
		times[phase][l] = append(times[phase][l], d)
		total[phase] += d
	})
	b.ResetTimer()
	for range b.N {
		request()
	}
	b.StopTimer()
	stop()
	for _, p := range []string{"create", "report"} {
		b.ReportMetric(float64(total[p].Microseconds())/float64(b.N), "stmt-us/"+p)
		var (
			lines []string
			p50s  time.Duration
		)
		for q, ds := range times[p] {
			slices.Sort(ds)
			p50 := ds[len(ds)/2]
			p50s += p50 * time.Duration(len(ds)) / time.Duration(b.N)
			lines = append(lines, fmt.Sprintf("| %.1f | %.2f | %s |", float64(p50.Nanoseconds())/1000, float64(len(ds))/float64(b.N), q))
		}
		// The statements' medians, summed (each times how often it runs):
		// less moved by the machine's other work than the mean.
		b.ReportMetric(float64(p50s.Nanoseconds())/1000, "p50-us/"+p)
		sort.Strings(lines)
		b.Logf("statements of a %s (%d): | p50 µs | per op | statement |\n%s", p, b.N, strings.Join(lines, "\n"))
	}
}
