package nft

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/firewall"
)

// The state file lets a restarted process know what table inet jitgate
// holds without reading its elements back.
//
// Why: the kernel dumps a set's elements a netlink message (~32 KiB, a few
// hundred elements) at a time, and each message walks the set from its
// first element again, skipping those already sent: listing a set costs
// the square of its size. Here 100,000 elements take ~3.3 s of kernel CPU
// to list; 1,000,000 would take minutes. Diffing the desired state against
// a listing is therefore not a way to reconcile at that size.
//
// What: after every batch whose effect the backend knows exactly (its cache
// is valid: the ruleset generation moved by exactly that batch), it writes
// what the kernel then holds: the whole cache after a full Apply, a record of
// the elements added and deleted after an ApplyDelta (appended; the file is
// rewritten whole when the records outgrow the elements). Each write ends
// with the ruleset generation it describes; the file starts with the boot,
// the network namespace, a fingerprint of the layout (sets, chains,
// rules) as the writing binary builds it, and the offset of the caller's
// clock to the kernel's (Backend.cacheClock: a wall clock stepped or a
// machine suspended since, and the deadlines no longer say what the kernel
// still holds). A new Backend loads the file as
// its cache only when boot, namespace and generation match the kernel's,
// the fingerprint matches its own layout, and the table exists: then nobody
// committed anything to any table of the namespace since the file was
// written, so the kernel holds exactly what the file says (less the
// elements it expired, which the cache drops by their deadlines). Anything
// else (another generation, a torn or unreadable file, another boot) and
// the file is ignored: the backend reads the table as before.
//
// The file is not synced: the kernel's table does not survive a reboot
// either, and a killed process loses nothing the kernel page cache holds.
// An agent killed between a batch and the file's update leaves a file one
// generation behind, which does not match, so a restart reads the table:
// slow at a million elements but exact.

// stateMagic starts a state file; the version is its last byte.
const stateMagic = "jitgate-nft-state\x03"

// Record types after the header.
const (
	recSet    byte = 'S' // a set's elements: name, count, elements (full file)
	recAdd    byte = 'A' // elements added to a set: name, count, elements
	recDel    byte = 'D' // elements deleted from a set: name, count, keys
	recCommit byte = 'G' // the records before it are committed: generation
)

// stateFile is the writer side of a state file.
type stateFile struct {
	path  string
	where string // boot id and network namespace, see namespaceID
	// records counts the elements appended since the last full write.
	records, elements int
}

// WithStateFile makes the backend keep path (see statefile.go) so that a
// restarted process can trust the table without listing it. The directory
// must exist and be private to the process (the agent's state directory).
func WithStateFile(path string) Option { return func(b *Backend) { b.state = &stateFile{path: path} } }

// namespaceID identifies the boot and the network namespace the backend
// programs: a generation number means something only within both. The
// namespace is named by its cookie (SO_NETNS_COOKIE, asked of the backend's
// own netlink socket, which lives in it): unlike its inode number, which
// the kernel hands to the next namespace made once this one is gone (a
// container restarted), a cookie is never reused within a boot, while the
// generation of a new namespace starts again from the bottom. A kernel
// without cookies (before 5.14) gets no state file: restarts read the table.
func (b *Backend) namespaceID() (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("reading the boot id: %w", err)
	}
	if b.nl == nil {
		return "", errors.New("identifying the network namespace: no netlink socket")
	}
	raw, err := b.nl.SyscallConn()
	if err != nil {
		return "", fmt.Errorf("identifying the network namespace: %w", err)
	}
	var (
		cookie uint64
		gerr   error
	)
	if err := raw.Control(func(fd uintptr) {
		cookie, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	}); err != nil || gerr != nil {
		return "", fmt.Errorf("identifying the network namespace (its cookie): %w", errors.Join(err, gerr))
	}
	return fmt.Sprintf("%s/netns-cookie:%d", strings.TrimSpace(string(boot)), cookie), nil
}

// saveState writes the whole cache to the state file (atomically: a new file
// renamed over the old). Errors are not fatal to the caller: without the
// file a restart reads the table.
func (b *Backend) saveState() {
	s := b.state
	if s == nil {
		return
	}
	if b.cache == nil {
		os.Remove(s.path)
		return
	}
	err := func() error {
		if s.where == "" {
			w, err := b.namespaceID()
			if err != nil {
				return err
			}
			s.where = w
		}
		tmp, err := os.CreateTemp(filepath.Dir(s.path), ".nft-state-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		w := bufio.NewWriterSize(tmp, 1<<20)
		w.WriteString(stateMagic)
		writeString(w, s.where)
		w.WriteByte(byte(b.cache.mode))
		writeUvarint(w, uint64(b.cache.rate))
		writeString(w, newLayout(b.cache.mode, b.cache.rate).fingerprint())
		writeVarint(w, b.cacheClock)
		n := 0
		for name, set := range b.cache.sets {
			w.WriteByte(recSet)
			writeString(w, name)
			writeUvarint(w, uint64(len(set.byID)))
			for _, e := range set.byID {
				writeElem(w, e)
			}
			n += len(set.byID)
		}
		w.WriteByte(recCommit)
		writeUvarint(w, uint64(b.cacheGen))
		if err := w.Flush(); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		s.records, s.elements = 0, n
		return os.Rename(tmp.Name(), s.path)
	}()
	if err != nil {
		os.Remove(s.path)
	}
}

// appendState records a delta's elements and the generation after it; when
// the records outgrow the elements, the file is written whole instead.
func (b *Backend) appendState(del, add map[string][]elem) {
	s := b.state
	if s == nil {
		return
	}
	n := 0
	for _, els := range del {
		n += len(els)
	}
	for _, els := range add {
		n += len(els)
	}
	if b.cache == nil || s.where == "" || s.records+n > max(s.elements, 1000) {
		b.saveState()
		return
	}
	err := func() error {
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		for _, rec := range []struct {
			typ byte
			m   map[string][]elem
		}{{recDel, del}, {recAdd, add}} {
			for name, els := range rec.m {
				w.WriteByte(rec.typ)
				writeString(w, name)
				writeUvarint(w, uint64(len(els)))
				for _, e := range els {
					writeElem(w, e)
				}
			}
		}
		w.WriteByte(recCommit)
		writeUvarint(w, uint64(b.cacheGen))
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}()
	if err != nil {
		os.Remove(s.path)
		return
	}
	s.records += n
}

// loadState makes the state file the cache when it describes the kernel of
// generation gen in this boot and namespace, and the table exists. It
// reports whether it did.
func (b *Backend) loadState(gen uint32, tableThere bool, off int64) bool {
	s := b.state
	if s == nil || !tableThere {
		return false
	}
	where, err := b.namespaceID()
	if err != nil {
		return false
	}
	s.where = where
	f, err := os.Open(s.path)
	if err != nil {
		return false
	}
	defer f.Close()
	ks, fileGen, clockOff, n, err := readState(bufio.NewReaderSize(f, 1<<20), where)
	if err != nil || fileGen != gen {
		return false
	}
	// A file written before the wall clock was stepped or the machine
	// suspended says when elements expire on a clock the kernel no longer
	// agrees with: clockSteady then refuses it below, and the table is read.
	b.cache, b.cacheGen, b.cacheRead, b.cacheClock = &ks, gen, time.Now(), clockOff
	if !b.clockSteady(off) {
		b.cache = nil
		return false
	}
	s.records, s.elements = 0, n
	return true
}

// readState decodes a state file written in namespace where: the state as
// of its last commit record, that record's generation, and the number of
// elements.
func readState(r *bufio.Reader, where string) (ks kernelState, gen uint32, clockOff int64, n int, err error) {
	l, clockOff, err := readStateHeader(r, where)
	if err != nil {
		return ks, 0, 0, 0, err
	}
	ks = kernelState{tableExists: true, mode: l.mode, layoutOK: true, rulesOK: true, rate: l.rate, sets: map[string]*setElems{}}
	for _, spec := range l.specs {
		ks.sets[spec.name] = newSetElems(spec)
	}
	gen, err = scanState(r, l, func(typ byte, name string, count uint64) {
		if set := ks.sets[name]; typ == recSet && count <= 1<<24 {
			set.grow(int(count))
			set.order = nil
		}
	}, func(typ byte, name string, e elem) {
		set := ks.sets[name]
		switch typ {
		case recSet, recAdd:
			if _, ok := set.byID[e.id()]; !ok {
				n++
			}
			set.byID[e.id()] = e
		case recDel:
			if _, ok := set.byID[e.id()]; ok {
				n--
			}
			delete(set.byID, e.id())
		}
	})
	if err != nil {
		return kernelState{}, 0, 0, 0, err
	}
	return ks, gen, clockOff, n, nil
}

// readStateHeader reads what a state file says before its records: the
// layout its writer built (refused unless it is this binary's for that
// mode and rate) and the offset of its writer's clock to the kernel's.
func readStateHeader(r *bufio.Reader, where string) (l layout, clockOff int64, err error) {
	magic := make([]byte, len(stateMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != stateMagic {
		return l, 0, errors.New("not a state file")
	}
	w, err := readString(r)
	if err != nil || w != where {
		return l, 0, errors.New("state file of another boot or namespace")
	}
	mode, err := r.ReadByte()
	if err != nil {
		return l, 0, err
	}
	rate, err := binary.ReadUvarint(r)
	if err != nil {
		return l, 0, err
	}
	l = newLayout(firewall.Mode(mode), int(rate))
	// The file vouches for the chains' rules and the sets' types only as
	// the binary that wrote it built them: a binary whose layout differs
	// (an upgrade that changed the rules) must read the table and refill
	// what differs, as it would without the file.
	fp, err := readString(r)
	if err != nil || fp != l.fingerprint() {
		return l, 0, errors.New("state file of another layout (another version of jitgate)")
	}
	if clockOff, err = binary.ReadVarint(r); err != nil {
		return l, 0, err
	}
	return l, clockOff, nil
}

// scanState reads the records after the header, calling begin for each
// record of elements (its type, set and count) and elem for each element,
// and returns the generation of the last commit. Records after the last
// commit are a batch whose record was cut short: a file must end at a
// commit to be used at all, so an error means the caller must forget
// everything it was told.
func scanState(r *bufio.Reader, l layout, begin func(typ byte, name string, count uint64), elem func(typ byte, name string, e elem)) (gen uint32, err error) {
	names := map[string]bool{}
	for _, spec := range l.specs {
		names[spec.name] = true
	}
	committed := false
	for {
		typ, err := r.ReadByte()
		if err == io.EOF && committed {
			return gen, nil
		}
		if err != nil {
			return 0, errors.New("state file ends without a commit")
		}
		committed = false
		if typ == recCommit {
			g, err := binary.ReadUvarint(r)
			if err != nil {
				return 0, err
			}
			gen, committed = uint32(g), true
			continue
		}
		if typ != recSet && typ != recAdd && typ != recDel {
			return 0, fmt.Errorf("state file: unknown record %q", typ)
		}
		name, err := readString(r)
		if err != nil {
			return 0, err
		}
		if !names[name] {
			return 0, fmt.Errorf("state file names set %s, not of the layout", name)
		}
		count, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, err
		}
		begin(typ, name, count)
		for range count {
			e, err := readElem(r)
			if err != nil {
				return 0, err
			}
			elem(typ, name, e)
		}
	}
}

// diffState reads the state file as loadState does, but against the
// desired sets d rather than into a copy of the table beside them (at a
// million elements ~130 MB, the largest thing a restart held): each
// element the file says the kernel holds is either one of d's as it is
// (within Tolerance), which is then marked held in d, or goes into the
// returned state, whose sets hold only those (matched counts the marked
// ones). Elements expired at now are gone from the kernel (as
// withoutExpired drops them from a cache). makePlan of the result and d is
// what makePlan of the whole file and d would be; the caller clears the
// marks (desired.clearHeld) once it has planned. ok is false (and d
// unmarked) when the file does not describe this generation of the kernel,
// as for loadState.
func (b *Backend) diffState(gen uint32, tableThere bool, off int64, d desired, now time.Time) (kernelState, bool) {
	s := b.state
	if s == nil || !tableThere {
		return kernelState{}, false
	}
	where, err := b.namespaceID()
	if err != nil {
		return kernelState{}, false
	}
	s.where = where
	f, err := os.Open(s.path)
	if err != nil {
		return kernelState{}, false
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	l, clockOff, err := readStateHeader(r, where)
	// A file written before the wall clock was stepped or the machine
	// suspended says when elements expire on a clock the kernel no longer
	// agrees with: the table is read instead (as clockSteady decides).
	if err != nil || time.Duration(off-clockOff).Abs() > Tolerance {
		return kernelState{}, false
	}
	ks := kernelState{tableExists: true, mode: l.mode, layoutOK: true, rulesOK: true, rate: l.rate, sets: map[string]*setElems{}}
	for _, spec := range l.specs {
		ks.sets[spec.name] = newSetElems(spec)
		ks.sets[spec.name].order = nil
	}
	at := now.UnixNano()
	fileGen, err := scanState(r, l, func(byte, string, uint64) {}, func(typ byte, name string, e elem) {
		extra := ks.sets[name]
		var want map[string]elem
		if w := d.sets[name]; w != nil {
			want = w.byID
		}
		id := e.id()
		// What the file said of id before is replaced by this record. A
		// mark is set under the desired element's own ident: assigned
		// under the file's (an equal string), the map would keep that
		// one as its key, and both strings. One lookup serves the whole
		// record (a million of them at a restart).
		w, ok := want[id]
		if ok && w.held() {
			w = w.withHeld(false)
			want[w.ident] = w
			extra.matched--
		}
		delete(extra.byID, id)
		if dl := e.dl &^ flagBits; typ == recDel || dl != 0 && dl <= at {
			return
		}
		if ok && e.same(w) {
			want[w.ident] = w.withHeld(true)
			extra.matched++
			return
		}
		extra.byID[id] = e
	})
	if err != nil || fileGen != gen {
		d.clearHeld()
		return kernelState{}, false
	}
	n := 0
	for _, set := range ks.sets {
		n += set.len() + set.matched
	}
	b.cacheClock = clockOff
	s.records, s.elements = 0, n
	return ks, true
}

// fingerprint digests everything of the layout a state file vouches for
// without naming it: each set's name, role, types and flags, each chain's
// type, hook, priority and rules (their tags and text).
func (l layout) fingerprint() string {
	h := sha256.New()
	for _, s := range l.specs {
		fmt.Fprintf(h, "set %s %d %d %t %s/%d %s/%d %t %t %t %t\n", s.name, s.id, s.role, s.v6, s.key.Name, s.key.Bytes,
			s.data.Name, s.data.Bytes, s.isMap, s.counter, s.interval(), s.timeout())
	}
	for _, c := range l.chains {
		hook := -1
		if c.hook != nil {
			hook = int(*c.hook)
		}
		fmt.Fprintf(h, "chain %s %s %d %d\n", c.name, c.typ, hook, c.priority)
		for i, r := range c.rules {
			fmt.Fprintf(h, "rule %q %q\n", ruleTag(i, r.extra), r.text)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeUvarint and writeVarint encode into the writer's free buffer: a
// local array would escape to the heap through Write, once per number.
func writeUvarint(w *bufio.Writer, v uint64) { w.Write(binary.AppendUvarint(w.AvailableBuffer(), v)) }

func writeVarint(w *bufio.Writer, v int64) { w.Write(binary.AppendVarint(w.AvailableBuffer(), v)) }

func writeString(w *bufio.Writer, s string) {
	writeUvarint(w, uint64(len(s)))
	w.WriteString(s)
}

func writeElem(w *bufio.Writer, e elem) {
	writeString(w, e.keyString())
	if e.ranged() {
		writeString(w, e.ident[len(e.ident)/2:])
	} else {
		writeString(w, "")
	}
	writeString(w, e.val())
	writeUvarint(w, uint64(e.dl&^flagBits))
}

func readString(r *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	if n > 1<<16 {
		return "", errors.New("state file: field too long")
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return string(b), err
}

// appendField appends a field of at most 64 bytes (a key) to b.
func appendField(r *bufio.Reader, b []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return b, err
	}
	if n > 64 {
		return b, errors.New("state file: key too long")
	}
	start := len(b)
	b = append(b, make([]byte, n)...)
	_, err = io.ReadFull(r, b[start:])
	return b, err
}

func readElem(r *bufio.Reader) (e elem, err error) {
	// The key and key end are read into one buffer and become the ident
	// in one allocation.
	var buf [128]byte
	b, err := appendField(r, buf[:0])
	if err != nil {
		return e, err
	}
	n := len(b)
	if b, err = appendField(r, b); err != nil {
		return e, err
	}
	if len(b) != n && len(b) != 2*n {
		return e, errors.New("state file: a key end unlike its key")
	}
	e = elem{ident: string(b)}
	if len(b) != n {
		e.dl = rangedBit
	}
	val, err := readString(r)
	if err != nil {
		return e, err
	}
	if val != "" {
		e.aux = &elemAux{val: val}
	}
	d, err := binary.ReadUvarint(r)
	if err != nil {
		return e, err
	}
	if d >= heldBit {
		return e, errors.New("state file: a deadline out of range")
	}
	e.dl |= int64(d)
	return e, nil
}
