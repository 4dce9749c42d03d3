package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables/expr"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Set keys and map data are concatenations in network byte order, each field
// padded with zeros to a multiple of 4 bytes (the kernel's 32-bit register
// size): an address is 4 or 16 bytes, a protocol 1+3, a port 2+2.
//
//	host:    protected, attempts, cut  proto . port
//	         grants4/6                 saddr . proto . port
//	gateway: protected, attempts, cut  daddr . proto . port
//	         public                    public addr . proto . public port
//	         published                 public addr . proto . public port : daddr . port
//	         grants4/6                 saddr . daddr . proto . port
//	         dnat4/6                   saddr . public addr . proto . public port : daddr . port

// elem is one set or map element, kept compact: a million of them are the
// backend's cache, and were a desired state and a state file's copy beside
// it. 32 bytes a value, its bytes one allocation, and a map slot of 48
// bytes with its key (three byte slices, two texts and a counter pointer
// were 136 bytes a value, plus the slices' arrays and a separate id
// string; then 72 bytes with the deadline a time.Time and the map data and
// a pointer of their own, which made the map ~200 bytes an element).
type elem struct {
	// ident is the element's identity in its set, and its bytes: the key,
	// followed in interval sets by the key end (as long as the key). The
	// sets' map is keyed by this very string (no copy).
	ident string
	// dl is the deadline in Unix nanoseconds (0: none, for sets without
	// timeouts), with rangedBit set when ident holds a key end.
	dl int64
	// aux is the map data (maps only) and what Render and the counters
	// read (nil otherwise: every grant element).
	aux *elemAux
}

// rangedBit marks in elem.dl an ident that holds a key end (deadlines
// are after 1970: the sign bit is free); heldBit marks a desired element
// the kernel holds as it is, while a state file is diffed against the
// desired sets (diffState; cleared before anything else reads them).
// Deadlines stop short of both (2116).
const (
	rangedBit = -1 << 63
	heldBit   = 1 << 62
	flagBits  = rangedBit | heldBit
)

// elemAux holds an element's map data, its nft text (the key and the data
// in nft syntax, made only for Render) and its counter as read back.
type elemAux struct {
	val           string
	text, valText string
	counter       *expr.Counter
}

// newElem makes the element of key and, for a range, keyEnd.
func newElem(key, keyEnd []byte) elem {
	if len(keyEnd) == 0 {
		return elem{ident: string(key)}
	}
	return elem{ident: string(key) + string(keyEnd), dl: rangedBit}
}

// ranged reports whether ident holds a key end.
func (e elem) ranged() bool { return e.dl < 0 }

// deadline is when the element expires; zero for sets without timeouts.
func (e elem) deadline() time.Time {
	n := e.dl &^ flagBits
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// setDeadline sets the deadline (zero: none).
func (e *elem) setDeadline(t time.Time) {
	e.dl &= rangedBit
	if !t.IsZero() {
		// Before 1970 (never): long expired; after 2116: then. Saturated,
		// not wrapped, outside 1678–2262.
		e.dl |= min(max(firewall.UnixNano(t), 1), heldBit-1)
	}
}

// held reports whether diffState marked e as held by the kernel.
func (e elem) held() bool { return e.dl&heldBit != 0 }

// withHeld is e marked (or not) as held by the kernel.
func (e elem) withHeld(h bool) elem {
	e.dl &^= heldBit
	if h {
		e.dl |= heldBit
	}
	return e
}

// val is the map data (maps only).
func (e elem) val() string {
	if e.aux == nil {
		return ""
	}
	return e.aux.val
}

// id identifies an element in its set independent of its data and deadline.
func (e elem) id() string { return e.ident }

func (e elem) keyString() string {
	if e.ranged() {
		return e.ident[:len(e.ident)/2]
	}
	return e.ident
}

// key and keyEnd are the element's key and key end (nil without one) as
// bytes, for netlink and decoding.
func (e elem) key() []byte { return []byte(e.keyString()) }

func (e elem) keyEnd() []byte {
	if !e.ranged() {
		return nil
	}
	return []byte(e.ident[len(e.ident)/2:])
}

func (e elem) valBytes() []byte {
	if e.val() == "" {
		return nil
	}
	return []byte(e.val())
}

func (e elem) text() string {
	if e.aux == nil {
		return ""
	}
	return e.aux.text
}

func (e elem) valText() string {
	if e.aux == nil {
		return ""
	}
	return e.aux.valText
}

func (e elem) counter() *expr.Counter {
	if e.aux == nil {
		return nil
	}
	return e.aux.counter
}

// same reports whether held can stay in place of want: same data, and a
// deadline off by at most Tolerance.
func (held elem) same(want elem) bool {
	hd, wd := held.dl&^flagBits, want.dl&^flagBits
	if held.val() != want.val() || (hd == 0) != (wd == 0) {
		return false
	}
	return time.Duration(hd-wd).Abs() <= Tolerance
}

// setElems are the elements of one set.
type setElems struct {
	spec  setSpec
	order []string // ids, in the order they were put
	byID  map[string]elem
	// matched counts the elements the kernel holds beside byID: those
	// of the desired sets a state file was diffed against (diffState),
	// marked held there, which byID then leaves out.
	matched int
}

func newSetElems(s setSpec) *setElems { return &setElems{spec: s, byID: map[string]elem{}} }

// grow makes room for n elements in an empty set.
func (s *setElems) grow(n int) {
	if len(s.byID) == 0 && n > 8 {
		s.byID = make(map[string]elem, n)
		s.order = make([]string, 0, n)
	}
}

func (s *setElems) put(e elem) {
	// One map operation, not a lookup and then an assignment: a full apply
	// puts every element once (a million at a restart), and the map grew
	// exactly when id was new.
	id, n := e.id(), len(s.byID)
	s.byID[id] = e
	if len(s.byID) != n {
		s.order = append(s.order, id)
	}
}

// ids returns the ids in put order, or sorted for sets read back.
func (s *setElems) ids() []string {
	if len(s.order) == len(s.byID) {
		return s.order
	}
	out := make([]string, 0, len(s.byID))
	for id := range s.byID {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (s *setElems) len() int {
	if s == nil {
		return 0
	}
	return len(s.byID)
}

// clearHeld clears diffState's marks.
func (d desired) clearHeld() {
	for _, s := range d.sets {
		for id, e := range s.byID {
			if e.held() {
				s.byID[id] = e.withHeld(false)
			}
		}
	}
}

// desired is the state Apply aims for, in kernel terms.
type desired struct {
	layout layout
	sets   map[string]*setElems
}

// grantCount is the number of grant elements d holds.
func (d desired) grantCount() int {
	n := 0
	for _, v6 := range []bool{false, true} {
		for _, r := range []role{roleGrants, roleHosts} {
			if s, ok := d.sets[d.layout.spec(r, v6).name]; ok {
				n += s.len()
			}
		}
	}
	return n
}

// desiredState encodes rs as of now. Grant and DNAT elements with less than
// 1 ms left, and malformed ones, are left out. The nft text of grant and DNAT
// elements is made only withText (for Render): at a million grants it costs
// a second of CPU and tens of megabytes an Apply never reads.
func desiredState(rs firewall.Ruleset, now time.Time, withText bool) desired {
	l := newLayout(rs.Mode, rs.SampleRate)
	d := desired{layout: l, sets: map[string]*setElems{}}
	for _, s := range l.specs {
		d.sets[s.name] = newSetElems(s)
	}
	gateway := rs.Mode == firewall.GatewayMode
	put := func(r role, v6 bool, e elem) { d.sets[l.spec(r, v6).name].put(e) }
	for _, k := range rs.SortedProtected() {
		if gateway != k.Dest.IsValid() {
			continue
		}
		e := portElem(k)
		put(roleProtected, k.Dest.Is6(), e)
		put(roleAttempts, k.Dest.Is6(), e)
	}
	for _, k := range rs.SortedCloseEstablished() {
		if gateway == k.Dest.IsValid() {
			put(roleCut, k.Dest.Is6(), portElem(k))
		}
	}
	els := rs.Elements(now)
	if !gateway {
		// The grants are garbage from here on (the caller passes them down
		// and keeps none): at a million grants 88 MB the sets need not sit
		// beside. A gateway's translations are made of them below.
		rs.Grants = nil
	}
	// Sized once: a map grown to a million elements by doubling allocates
	// about twice its final size on the way.
	sizes := map[string]int{}
	for _, e := range els {
		sizes[l.spec(grantRole(e.From, e.To), e.From.Is6()).name]++
	}
	for name, n := range sizes {
		d.sets[name].grow(n)
	}
	for _, e := range els {
		if e.Expires.Sub(now) < time.Millisecond || !validElement(e.Key(), gateway) {
			continue
		}
		put(grantRole(e.From, e.To), e.From.Is6(), grantElem(e, withText))
	}
	if !gateway {
		return d
	}
	for _, m := range rs.SortedPublished() {
		pub := portElem(m.PublicKey())
		put(rolePublic, m.Public.Is6(), pub)
		pub.aux = &elemAux{val: string(targetBytes(m.Target)), text: pub.text(), valText: targetText(m.Target)}
		put(rolePublished, m.Public.Is6(), pub)
	}
	for _, t := range rs.Translations(now) {
		if t.Expires.Sub(now) < time.Millisecond || !validElement(firewall.ElementKey{From: t.From, To: t.To, Dest: t.Mapping.Public}, true) {
			continue
		}
		put(dnatRole(t.From, t.To), t.From.Is6(), dnatElem(t, withText))
	}
	return d
}

func protoBytes(p firewall.Protocol) []byte { return []byte{byte(p), 0, 0, 0} }

func portBytes(port uint16) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, port)
	return b
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// addrBytes is the address's bytes, or nothing for the zero Addr (host mode).
func addrBytes(a netip.Addr) []byte {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

func portKeyBytes(k firewall.PortKey) []byte {
	return concat(addrBytes(k.Dest), protoBytes(k.Proto), portBytes(k.Port))
}

func portElem(k firewall.PortKey) elem {
	e := newElem(portKeyBytes(k), nil)
	e.aux = &elemAux{text: portText(k)}
	return e
}

func grantKeyBytes(src netip.Addr, k firewall.PortKey) []byte {
	return concat(src.AsSlice(), portKeyBytes(k))
}

// grantElem encodes a grant element; one of a single address (the hosts
// set's) has no key end.
func grantElem(e firewall.Element, withText bool) elem {
	k := e.PortKey()
	out := rangeElem(e.From, e.To, k)
	out.setDeadline(e.Expires)
	if withText {
		out.aux = &elemAux{text: renderRange(e.From, e.To) + " . " + portText(k)}
	}
	return out
}

// rangeElem is the element of source range from-to on k: one allocation,
// the ident itself.
func rangeElem(from, to netip.Addr, k firewall.PortKey) elem {
	var buf [2 * (16 + 16 + 4 + 4)]byte
	b := appendGrantKey(buf[:0], from, k)
	out := elem{}
	if from != to {
		b = appendGrantKey(b, to, k)
		out.dl = rangedBit
	}
	out.ident = string(b)
	return out
}

// appendGrantKey appends the key of src on k: saddr [. daddr] . proto . port.
func appendGrantKey(b []byte, src netip.Addr, k firewall.PortKey) []byte {
	b = appendAddr(b, src)
	if k.Dest.IsValid() {
		b = appendAddr(b, k.Dest)
	}
	b = append(b, byte(k.Proto), 0, 0, 0)
	return append(binary.BigEndian.AppendUint16(b, k.Port), 0, 0)
}

// appendAddr appends a's 4 or 16 bytes (as AsSlice, without allocating).
func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

func targetBytes(k firewall.PortKey) []byte { return concat(k.Dest.AsSlice(), portBytes(k.Port)) }

func dnatElem(t firewall.Translation, withText bool) elem {
	pub := t.Mapping.PublicKey()
	out := rangeElem(t.From, t.To, pub)
	out.setDeadline(t.Expires)
	out.aux = &elemAux{val: string(targetBytes(t.Mapping.Target))}
	if withText {
		out.aux.text, out.aux.valText = renderRange(t.From, t.To)+" . "+portText(pub), targetText(t.Mapping.Target)
	}
	return out
}

func portText(k firewall.PortKey) string {
	s := fmt.Sprintf("%s . %d", renderProto(k.Proto), k.Port)
	if k.Dest.IsValid() {
		s = k.Dest.String() + " . " + s
	}
	return s
}

func targetText(k firewall.PortKey) string { return fmt.Sprintf("%s . %d", k.Dest, k.Port) }

// validElement reports whether k can be written to a grant set: a
// well-formed range of one family, with a destination of that family in
// gateway mode and none in host mode. Ruleset.Elements yields only such
// ranges; this is the last line of defence. Skipping a malformed element
// keeps one bad grant from failing every Apply, and fails closed.
func validElement(k firewall.ElementKey, gateway bool) bool {
	ok := k.From.IsValid() && k.To.IsValid() && k.From.Zone() == "" && k.To.Zone() == "" &&
		k.From.Is4() == k.To.Is4() && !k.To.Less(k.From)
	if gateway {
		return ok && k.Dest.IsValid() && k.Dest.Is4() == k.From.Is4()
	}
	return ok && !k.Dest.IsValid()
}

// fields splits b into fields of the given sizes.
func fields(b []byte, sizes ...int) ([][]byte, error) {
	n := 0
	for _, s := range sizes {
		n += s
	}
	if len(b) != n {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), n)
	}
	out := make([][]byte, len(sizes))
	for i, s := range sizes {
		out[i], b = b[:s], b[s:]
	}
	return out, nil
}

func addrOf(b []byte) netip.Addr { a, _ := netip.AddrFromSlice(b); return a }

func addrLen(v6 bool) int {
	if v6 {
		return 16
	}
	return 4
}

// decodePort reads a port key: proto . port, after the destination in
// gateway mode.
func decodePort(b []byte, gateway, v6 bool) (firewall.PortKey, error) {
	if !gateway {
		f, err := fields(b, 4, 4)
		if err != nil {
			return firewall.PortKey{}, fmt.Errorf("port key: %w", err)
		}
		return firewall.PortKey{Proto: firewall.Protocol(f[0][0]), Port: binary.BigEndian.Uint16(f[1])}, nil
	}
	f, err := fields(b, addrLen(v6), 4, 4)
	if err != nil {
		return firewall.PortKey{}, fmt.Errorf("port key: %w", err)
	}
	return firewall.PortKey{Dest: addrOf(f[0]), Proto: firewall.Protocol(f[1][0]), Port: binary.BigEndian.Uint16(f[2])}, nil
}

// decodeRange reads a source range and the port key after it, from an
// element's key and key end (a missing key end is a single address).
func decodeRange(key, keyEnd []byte, gateway, v6 bool) (from, to netip.Addr, k firewall.PortKey, err error) {
	n := addrLen(v6)
	if len(key) < n {
		return from, to, k, fmt.Errorf("key of %d bytes", len(key))
	}
	if len(keyEnd) == 0 {
		keyEnd = key
	}
	if len(keyEnd) != len(key) || string(key[n:]) != string(keyEnd[n:]) {
		return from, to, k, fmt.Errorf("element %x-%x spans several ports", key, keyEnd)
	}
	k, err = decodePort(key[n:], gateway, v6)
	return addrOf(key[:n]), addrOf(keyEnd[:n]), k, err
}

// decodeTarget reads map data: daddr . port.
func decodeTarget(b []byte, proto firewall.Protocol, v6 bool) (firewall.PortKey, error) {
	f, err := fields(b, addrLen(v6), 4)
	if err != nil {
		return firewall.PortKey{}, fmt.Errorf("map data: %w", err)
	}
	return firewall.PortKey{Dest: addrOf(f[0]), Proto: proto, Port: binary.BigEndian.Uint16(f[1])}, nil
}

// Each element with a timeout carries its intended deadline as an nft
// comment (which `nft list` shows). The kernel reports only the time left,
// and a dump of thousands of elements takes tens of milliseconds during which
// that time is computed element by element, so the deadline derived from it
// is uncertain by the duration of the dump; and the kernel starts each
// timeout when it processes the element, up to the duration of the batch
// after Apply chose it. The comment gives the exact deadline back, which
// keeps a large Apply idempotent. readElements trusts the comment only when
// it agrees with the time left to within commentSlack.
const (
	untilPrefix = "jitgate:until="
	untilLayout = "2006-01-02T15:04:05.000Z07:00" // fixed width for UTC
	// commentSlack bounds how far a comment may disagree with the kernel's
	// time left: the duration of a large batch, plus margin. A larger gap
	// means the element was not written by us or the wall clock was
	// stepped; the kernel's time left then wins (and Apply rewrites the
	// element if that is off).
	commentSlack = 5 * time.Second
)

func untilComment(deadline time.Time) string {
	return untilPrefix + deadline.UTC().Format(untilLayout)
}

func parseUntil(comment string) (time.Time, bool) {
	v, ok := strings.CutPrefix(comment, untilPrefix)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(untilLayout, v)
	return t, err == nil
}
