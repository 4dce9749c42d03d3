package nft

import (
	"bytes"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/jitgate/jitgate/internal/firewall"
)

// The objects the backend owns. Nothing outside table inet jitgate is ever
// read-modified or deleted.
const (
	tableName = "jitgate"

	// Host mode hooks input; gateway mode hooks forward and, for DNAT,
	// prerouting.
	inputChain      = "input"
	forwardChain    = "forward"
	preroutingChain = "prerouting"

	// chainPriority runs the gate just before the conventional filter
	// priority (0), so our drop happens before other filter chains accept.
	chainPriority = -10
	// natPriority is the conventional dstnat priority.
	natPriority = -100

	// LogGroup is the nflog group the gate sends sampled blocked packets
	// to (see Sampler). One listener per network namespace may bind it.
	LogGroup = 4747
	// logBurst is the burst of the sampling limit (nft's default).
	logBurst = 5
)

// ruleTagPrefix marks our rules. Bump the version whenever the rules
// change: a chain whose tags differ is flushed and refilled in the same
// batch, which is how a new binary upgrades the layout atomically. (A
// variable only so that tests can play a newer binary.)
var ruleTagPrefix = "jitgate:v3:"

// role says what a set's elements mean.
type role uint8

const (
	// roleProtected: the protected ports. The drop rule looks them up, so
	// their element counters count dropped packets.
	roleProtected role = iota
	// roleAttempts: the same ports, looked up only by the sampling rule for
	// new connections: their counters count new connection attempts.
	roleAttempts
	// roleCut: the protected ports whose established sessions end with
	// their grant.
	roleCut
	// roleGrants: the grant elements (interval, timeout).
	roleGrants
	// rolePublished: a gateway's DNAT mappings, public endpoint -> target;
	// the drop rule for untranslated packets looks them up (counters).
	rolePublished
	// rolePublic: the public endpoints again, for the sampling rule.
	rolePublic
	// roleDNAT: source range . public endpoint -> target, one per grant
	// element of a published target (interval, timeout).
	roleDNAT
	// roleHosts: the grant elements of a single source address (hash,
	// timeout). Most grants are one address; a hash set adds and deletes
	// one in constant time, where the interval set's kernel cost grows with
	// the set (measured: deleting one of 10,000 took 27-74 ms, adding one
	// to 100,000 20-90 ms; see ApplyDelta). Elements are disjoint, so an
	// address is in at most one of the two sets.
	roleHosts
	// roleDNATHosts: the DNAT entries of single source addresses (hash map,
	// timeout), for the same reason.
	roleDNATHosts
)

// setSpec describes one set or map of the layout.
type setSpec struct {
	name    string
	id      uint32
	role    role
	v6      bool // the family of the addresses in the key (host-mode port sets have none)
	key     nftables.SetDatatype
	data    nftables.SetDatatype // maps only
	isMap   bool
	counter bool
}

func (s setSpec) interval() bool { return s.role == roleGrants || s.role == roleDNAT }

// timeout reports whether the set's elements carry timeouts: the grant and
// DNAT sets, interval or hash.
func (s setSpec) timeout() bool {
	return s.interval() || s.role == roleHosts || s.role == roleDNATHosts
}

// grantRole is the set role of a grant element: one source address goes to
// the hash set, a range to the interval set.
func grantRole(from, to netip.Addr) role {
	if from == to {
		return roleHosts
	}
	return roleGrants
}

// dnatRole is grantRole for DNAT entries.
func dnatRole(from, to netip.Addr) role {
	if from == to {
		return roleDNATHosts
	}
	return roleDNAT
}

// nftSet builds the library's description of the set; built per call
// because the library mutates what it is given.
func (s setSpec) nftSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{
		Table: t, ID: s.id, Name: s.name,
		KeyType: s.key, KeyByteOrder: binaryutil.BigEndian,
		DataType: s.data, IsMap: s.isMap,
		Interval: s.interval(), HasTimeout: s.timeout(), Concatenation: true,
		Counter: s.counter,
	}
}

// sameSet reports whether a set read from the kernel is usable as want:
// same key and data types, and the flags the elements need. (The library
// does not read back a set's counter flag; readKernel checks the elements
// carry counters instead.)
func sameSet(got *nftables.Set, want setSpec) bool {
	ok := got.KeyType.GetNFTMagic() == want.key.GetNFTMagic() && got.KeyType.Bytes == want.key.Bytes &&
		got.Interval == want.interval() && got.HasTimeout == want.timeout() &&
		got.IsMap == want.isMap && !got.Constant
	if want.isMap {
		ok = ok && got.DataType.GetNFTMagic() == want.data.GetNFTMagic() && got.DataType.Bytes == want.data.Bytes
	}
	return ok
}

var (
	tProto   = nftables.TypeInetProto
	tService = nftables.TypeInetService
	tAddr4   = nftables.TypeIPAddr
	tAddr6   = nftables.TypeIP6Addr
)

func addrType(v6 bool) nftables.SetDatatype {
	if v6 {
		return tAddr6
	}
	return tAddr4
}

// chainSpec describes one base chain and its rules.
type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority int32
	rules    []ruleSpec
}

// ruleSpec is one rule: its expressions (a counter among them is carried
// over when the chain is refilled) and its text for Render.
type ruleSpec struct {
	exprs []expr.Any
	text  string
	// extra distinguishes versions of a rule that differ in a parameter
	// (the sampling rate), so that a change refills the chain.
	extra string
}

// layout is the complete structure of table inet jitgate for one mode and
// sampling rate.
type layout struct {
	mode   firewall.Mode
	rate   int
	table  *nftables.Table
	specs  []setSpec
	chains []chainSpec
}

func ourTable() *nftables.Table {
	return &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}
}

// newLayout describes the table for mode; rate is the sampling rate of
// blocked packets per second (0: the default).
func newLayout(mode firewall.Mode, rate int) layout {
	if rate <= 0 {
		rate = firewall.DefaultSampleRate
	}
	l := layout{mode: mode, rate: rate, table: ourTable()}
	id := uint32(0)
	add := func(name string, r role, v6 bool, key nftables.SetDatatype, counter bool) {
		id++
		s := setSpec{name: name, id: id, role: r, v6: v6, key: key, counter: counter}
		if r == rolePublished || r == roleDNAT || r == roleDNATHosts {
			s.isMap = true
			s.data = nftables.MustConcatSetType(addrType(v6), tService)
		}
		l.specs = append(l.specs, s)
	}
	if mode == firewall.HostMode {
		port := nftables.MustConcatSetType(tProto, tService)
		add("protected", roleProtected, false, port, true)
		add("attempts", roleAttempts, false, port, true)
		add("cut", roleCut, false, port, false)
		for _, v6 := range []bool{false, true} {
			add(famName("grants", v6), roleGrants, v6, nftables.MustConcatSetType(addrType(v6), tProto, tService), false)
		}
		for _, v6 := range []bool{false, true} {
			add(famName("hosts", v6), roleHosts, v6, nftables.MustConcatSetType(addrType(v6), tProto, tService), false)
		}
		l.chains = []chainSpec{hostChain(l, rate)}
		return l
	}
	for _, v6 := range []bool{false, true} {
		a := addrType(v6)
		port := nftables.MustConcatSetType(a, tProto, tService)
		add(famName("protected", v6), roleProtected, v6, port, true)
		add(famName("attempts", v6), roleAttempts, v6, port, true)
		add(famName("cut", v6), roleCut, v6, port, false)
		add(famName("grants", v6), roleGrants, v6, nftables.MustConcatSetType(a, a, tProto, tService), false)
		add(famName("published", v6), rolePublished, v6, port, true)
		add(famName("public", v6), rolePublic, v6, port, false)
		add(famName("dnat", v6), roleDNAT, v6, nftables.MustConcatSetType(a, a, tProto, tService), false)
		add(famName("hosts", v6), roleHosts, v6, nftables.MustConcatSetType(a, a, tProto, tService), false)
		add(famName("dnathosts", v6), roleDNATHosts, v6, nftables.MustConcatSetType(a, a, tProto, tService), false)
	}
	l.chains = []chainSpec{forwardChainSpec(l, rate), preroutingChainSpec(l, rate)}
	return l
}

func famName(base string, v6 bool) string {
	if v6 {
		return base + "6"
	}
	return base + "4"
}

// spec returns the set of role r for family v6.
func (l layout) spec(r role, v6 bool) setSpec {
	for _, s := range l.specs {
		if s.role == r && (s.v6 == v6 || l.mode == firewall.HostMode && r != roleGrants && r != roleHosts) {
			return s
		}
	}
	panic(fmt.Sprintf("layout %s has no set of role %d", l.mode, r))
}

func (l layout) specByName(name string) (setSpec, bool) {
	for _, s := range l.specs {
		if s.name == name {
			return s, true
		}
	}
	return setSpec{}, false
}

// nftChain builds the library's description of a chain.
func (l layout) nftChain(c chainSpec) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name: c.name, Table: l.table, Type: c.typ, Hooknum: c.hook,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(c.priority)), Policy: &policy,
	}
}

// sameChain reports whether a chain read from the kernel is want.
func sameChain(got *nftables.Chain, want *nftables.Chain) bool {
	return got.Type == want.Type &&
		got.Hooknum != nil && *got.Hooknum == *want.Hooknum &&
		got.Priority != nil && *got.Priority == *want.Priority &&
		got.Policy != nil && *got.Policy == *want.Policy
}

// tags returns the tags of a chain's rules in order.
func (c chainSpec) tags() [][]byte {
	out := make([][]byte, len(c.rules))
	for i, r := range c.rules {
		out[i] = ruleTag(i, r.extra)
	}
	return out
}

// nftRules builds a chain's rules; counters carries rule counters over by
// chain and tag.
func (l layout) nftRules(c chainSpec, counters map[string]expr.Counter) []*nftables.Rule {
	ch := l.nftChain(c)
	out := make([]*nftables.Rule, len(c.rules))
	for i, r := range c.rules {
		tag := ruleTag(i, r.extra)
		exprs := make([]expr.Any, len(r.exprs))
		for j, e := range r.exprs {
			if _, ok := e.(*expr.Counter); ok {
				cnt := counters[counterKey(c.name, tag)]
				e = &cnt
			}
			exprs[j] = e
		}
		out[i] = &nftables.Rule{Table: l.table, Chain: ch, Exprs: exprs, UserData: tag}
	}
	return out
}

func counterKey(chain string, tag []byte) string { return chain + "/" + string(tag) }

// ruleTag is a rule's user data: an nft comment, so `nft list` shows it.
func ruleTag(i int, extra string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, tagText(i, extra))
}

func tagText(i int, extra string) string {
	if extra != "" {
		return fmt.Sprintf("%s%d:%s", ruleTagPrefix, i, extra)
	}
	return fmt.Sprintf("%s%d", ruleTagPrefix, i)
}

// rulesAreOurs reports whether got holds exactly the rules of c, in order,
// judged by their tags.
func rulesAreOurs(got []*nftables.Rule, c chainSpec) bool {
	want := c.tags()
	if len(got) != len(want) {
		return false
	}
	for i, r := range got {
		if !bytes.Equal(r.UserData, want[i]) {
			return false
		}
	}
	return true
}

// ruleCounters collects the counters of a chain's rules by tag.
func ruleCounters(chain string, rules []*nftables.Rule, into map[string]expr.Counter) {
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				into[counterKey(chain, r.UserData)] = *c
			}
		}
	}
}

// Registers: concatenations are built in consecutive 32-bit registers
// starting at NFT_REG32_00 (8); each field takes its length rounded up to 4
// bytes, which is why set keys pad every field to 4 bytes.
const (
	reg1  = 1 // NFT_REG_1, a 16-byte register, for single comparisons and map data
	reg32 = 8 // NFT_REG32_00
)

type field uint8

const (
	fSaddr field = iota
	fDaddr
	fProto
	fDport
)

// keyExprs loads the concatenation of fields into registers from reg32.
func keyExprs(v6 bool, fields ...field) []expr.Any {
	var out []expr.Any
	reg := uint32(reg32)
	addrOff, addrLen := uint32(12), uint32(4)
	if v6 {
		addrOff, addrLen = 8, 16
	}
	for _, f := range fields {
		switch f {
		case fSaddr, fDaddr:
			off := addrOff
			if f == fDaddr {
				off += addrLen
			}
			out = append(out, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: addrLen})
			reg += addrLen / 4
		case fProto:
			out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg})
			reg++
		case fDport:
			out = append(out, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			reg++
		}
	}
	return out
}

func lookup(s setSpec, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg32, SetName: s.name, SetID: s.id, Invert: invert}
}

func nfproto(v6 bool) []expr.Any {
	f := byte(unix.NFPROTO_IPV4)
	if v6 {
		f = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f}},
	}
}

func l4proto(p firewall.Protocol) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(p)}},
	}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

const established = expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED

func ctReply() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}}, // IP_CT_DIR_REPLY
	}
}

func accept() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() *expr.Verdict   { return &expr.Verdict{Kind: expr.VerdictDrop} }

func sample(rate int) []expr.Any {
	return []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(rate), Unit: expr.LimitTimeSecond, Burst: logBurst},
		&expr.Log{Key: 1 << unix.NFTA_LOG_GROUP, Group: LogGroup},
	}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func one(e ...expr.Any) []expr.Any { return e }

// nft text of the fields, per family.
func ipText(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

func nfprotoText(v6 bool) string {
	if v6 {
		return "meta nfproto ipv6"
	}
	return "meta nfproto ipv4"
}

func sampleText(rate int) string {
	return fmt.Sprintf("limit rate %d/second burst %d packets log group %d", rate, logBurst, LogGroup)
}

const (
	replyText       = "ct state established,related ct direction reply accept"
	portKeyText     = "meta l4proto . th dport"
	establishedText = "ct state established,related"
)

// hostChain is the input chain of host mode:
//
//  0. established or related packets of the reply direction pass;
//  1. so do those of the original direction, except on close-established
//     ports, which must show a live grant on every packet;
//  2. loopback passes;
//  3. and 4. a grant (source . protocol . port) passes;
//  5. an established TCP session on a close-established port without a
//     grant is reset;
//  6. a new connection on a protected port is counted (the attempts set's
//     counters) and sampled to the nflog group, rate-limited;
//  7. anything left on a protected port is dropped (counted per port by
//     the protected set's counters).
func hostChain(l layout, rate int) chainSpec {
	protected, attempts, cut := l.spec(roleProtected, false), l.spec(roleAttempts, false), l.spec(roleCut, false)
	key := keyExprs(false, fProto, fDport)
	rules := []ruleSpec{
		{exprs: cat(ctState(established), ctReply(), one(accept())), text: replyText},
		{exprs: cat(ctState(established), key, one(lookup(cut, true), accept())),
			text: fmt.Sprintf("%s %s != @%s accept", establishedText, portKeyText, cut.name)},
		{exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname("lo")},
			accept(),
		}, text: `iifname "lo" accept`},
	}
	for _, r := range []role{roleGrants, roleHosts} {
		for _, v6 := range []bool{false, true} {
			g := l.spec(r, v6)
			rules = append(rules, ruleSpec{
				exprs: cat(nfproto(v6), keyExprs(v6, fSaddr, fProto, fDport), one(lookup(g, false), accept())),
				text:  fmt.Sprintf("%s %s saddr . %s @%s accept", nfprotoText(v6), ipText(v6), portKeyText, g.name),
			})
		}
	}
	rules = append(rules,
		ruleSpec{exprs: cat(l4proto(firewall.TCP), ctState(established), key, one(lookup(cut, false), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})),
			text: fmt.Sprintf("meta l4proto tcp %s %s @%s reject with tcp reset", establishedText, portKeyText, cut.name)},
		ruleSpec{exprs: cat(ctState(expr.CtStateBitNEW), key, one(lookup(attempts, false)), sample(rate)),
			text: fmt.Sprintf("ct state new %s @%s %s", portKeyText, attempts.name, sampleText(rate)), extra: fmt.Sprintf("rate=%d", rate)},
		ruleSpec{exprs: cat(key, one(lookup(protected, false), &expr.Counter{}, drop())),
			text: fmt.Sprintf("%s @%s counter drop", portKeyText, protected.name)},
	)
	return chainSpec{name: inputChain, typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: chainPriority, rules: rules}
}

// forwardChainSpec is the forward chain of gateway mode: the host chain's
// rules with the destination in every key, per family (no loopback rule).
func forwardChainSpec(l layout, rate int) chainSpec {
	rules := []ruleSpec{{exprs: cat(ctState(established), ctReply(), one(accept())), text: replyText}}
	perFamily := func(f func(v6 bool) ruleSpec) {
		for _, v6 := range []bool{false, true} {
			rules = append(rules, f(v6))
		}
	}
	dkey := func(v6 bool) ([]expr.Any, string) {
		return keyExprs(v6, fDaddr, fProto, fDport), fmt.Sprintf("%s daddr . %s", ipText(v6), portKeyText)
	}
	perFamily(func(v6 bool) ruleSpec {
		k, kt := dkey(v6)
		cut := l.spec(roleCut, v6)
		return ruleSpec{exprs: cat(nfproto(v6), ctState(established), k, one(lookup(cut, true), accept())),
			text: fmt.Sprintf("%s %s %s != @%s accept", nfprotoText(v6), establishedText, kt, cut.name)}
	})
	for _, r := range []role{roleGrants, roleHosts} {
		perFamily(func(v6 bool) ruleSpec {
			g := l.spec(r, v6)
			ip := ipText(v6)
			return ruleSpec{exprs: cat(nfproto(v6), keyExprs(v6, fSaddr, fDaddr, fProto, fDport), one(lookup(g, false), accept())),
				text: fmt.Sprintf("%s %s saddr . %s daddr . %s @%s accept", nfprotoText(v6), ip, ip, portKeyText, g.name)}
		})
	}
	perFamily(func(v6 bool) ruleSpec {
		k, kt := dkey(v6)
		cut := l.spec(roleCut, v6)
		return ruleSpec{exprs: cat(nfproto(v6), l4proto(firewall.TCP), ctState(established), k, one(lookup(cut, false), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})),
			text: fmt.Sprintf("%s meta l4proto tcp %s %s @%s reject with tcp reset", nfprotoText(v6), establishedText, kt, cut.name)}
	})
	perFamily(func(v6 bool) ruleSpec {
		k, kt := dkey(v6)
		a := l.spec(roleAttempts, v6)
		return ruleSpec{exprs: cat(nfproto(v6), ctState(expr.CtStateBitNEW), k, one(lookup(a, false)), sample(rate)),
			text:  fmt.Sprintf("%s ct state new %s @%s %s", nfprotoText(v6), kt, a.name, sampleText(rate)),
			extra: fmt.Sprintf("rate=%d", rate)}
	})
	perFamily(func(v6 bool) ruleSpec {
		k, kt := dkey(v6)
		p := l.spec(roleProtected, v6)
		return ruleSpec{exprs: cat(nfproto(v6), k, one(lookup(p, false), &expr.Counter{}, drop())),
			text: fmt.Sprintf("%s %s @%s counter drop", nfprotoText(v6), kt, p.name)}
	})
	return chainSpec{name: forwardChain, typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: chainPriority, rules: rules}
}

// preroutingChainSpec is the DNAT chain of gateway mode: a packet to a
// published endpoint from a granted source is translated to the target
// (the dnat map holds one entry per grant element); any other packet to a
// published endpoint is sampled and dropped. NAT chains see only the first
// packet of a connection; conntrack translates the rest.
func preroutingChainSpec(l layout, rate int) chainSpec {
	var rules []ruleSpec
	for _, fv := range []struct {
		r  role
		v6 bool
	}{{roleDNAT, false}, {roleDNAT, true}, {roleDNATHosts, false}, {roleDNATHosts, true}} {
		v6 := fv.v6
		m := l.spec(fv.r, v6)
		fam, protoReg := uint32(unix.NFPROTO_IPV4), uint32(reg32+1)
		if v6 {
			fam, protoReg = unix.NFPROTO_IPV6, reg32+4
		}
		ip := ipText(v6)
		for _, p := range []firewall.Protocol{firewall.TCP, firewall.UDP} {
			rules = append(rules, ruleSpec{
				exprs: cat(nfproto(v6), l4proto(p), keyExprs(v6, fSaddr, fDaddr, fProto, fDport), one(
					&expr.Lookup{SourceRegister: reg32, DestRegister: reg1, IsDestRegSet: true, SetName: m.name, SetID: m.id},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: reg1, RegProtoMin: protoReg, Specified: true},
				)),
				text: fmt.Sprintf("%s meta l4proto %s dnat %s to %s saddr . %s daddr . %s map @%s", nfprotoText(v6), p, ip, ip, ip, portKeyText, m.name),
			})
		}
	}
	for _, v6 := range []bool{false, true} {
		pub := l.spec(rolePublic, v6)
		rules = append(rules, ruleSpec{
			exprs: cat(nfproto(v6), keyExprs(v6, fDaddr, fProto, fDport), one(lookup(pub, false)), sample(rate)),
			text:  fmt.Sprintf("%s %s daddr . %s @%s %s", nfprotoText(v6), ipText(v6), portKeyText, pub.name, sampleText(rate)),
			extra: fmt.Sprintf("rate=%d", rate),
		})
	}
	for _, v6 := range []bool{false, true} {
		p := l.spec(rolePublished, v6)
		rules = append(rules, ruleSpec{
			exprs: cat(nfproto(v6), keyExprs(v6, fDaddr, fProto, fDport), one(lookup(p, false), &expr.Counter{}, drop())),
			text:  fmt.Sprintf("%s %s daddr . %s @%s counter drop", nfprotoText(v6), ipText(v6), portKeyText, p.name),
		})
	}
	return chainSpec{name: preroutingChain, typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, priority: natPriority, rules: rules}
}

// ifname pads an interface name as the kernel stores it (IFNAMSIZ bytes).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
