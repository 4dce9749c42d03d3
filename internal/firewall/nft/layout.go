package nft

import (
	"bytes"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The objects the backend owns. Nothing outside table inet jitgate is ever
// read-modified or deleted.
const (
	tableName     = "jitgate"
	chainName     = "input"
	protectedName = "protected"
	grants4Name   = "grants4"
	grants6Name   = "grants6"

	// chainPriority runs the gate just before the conventional filter
	// priority (0), so our drop happens before other filter chains accept.
	chainPriority = -10

	// ruleTagPrefix marks our rules. Bump the version whenever the rules
	// change: a chain whose tags differ is flushed and refilled in the same
	// batch, which is how a new binary upgrades the layout atomically.
	ruleTagPrefix = "jitgate:v1:"
)

// Set IDs name sets created within one batch. We set them ourselves: leaving
// them zero makes the library allocate one from a package counter that is
// not safe for concurrent use.
const (
	protectedID = 1
	grants4ID   = 2
	grants6ID   = 3
)

var (
	protectedType = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	grants4Type   = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	grants6Type   = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
)

// layout builds fresh descriptions of our objects. They are built per call
// because the library mutates what it is given.
type layout struct {
	table                       *nftables.Table
	chain                       *nftables.Chain
	protected, grants4, grants6 *nftables.Set
}

func newLayout() layout {
	t := &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}
	policy := nftables.ChainPolicyAccept
	return layout{
		table: t,
		chain: &nftables.Chain{
			Name:     chainName,
			Table:    t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookInput,
			Priority: nftables.ChainPriorityRef(chainPriority),
			Policy:   &policy,
		},
		protected: &nftables.Set{
			Table: t, ID: protectedID, Name: protectedName,
			KeyType: protectedType, KeyByteOrder: binaryutil.BigEndian,
		},
		grants4: grantSet(t, grants4ID, grants4Name, grants4Type),
		grants6: grantSet(t, grants6ID, grants6Name, grants6Type),
	}
}

func grantSet(t *nftables.Table, id uint32, name string, typ nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{
		Table: t, ID: id, Name: name,
		KeyType: typ, KeyByteOrder: binaryutil.BigEndian,
		Interval: true, HasTimeout: true, Concatenation: true,
	}
}

func (l layout) sets() []*nftables.Set { return []*nftables.Set{l.protected, l.grants4, l.grants6} }

// sameSet reports whether a set read from the kernel is usable as want: same
// key type and length, and the interval and timeout flags the elements need.
func sameSet(got, want *nftables.Set) bool {
	return got.KeyType.GetNFTMagic() == want.KeyType.GetNFTMagic() &&
		got.KeyType.Bytes == want.KeyType.Bytes &&
		got.Interval == want.Interval && got.HasTimeout == want.HasTimeout &&
		!got.IsMap && !got.Constant
}

// sameChain reports whether a chain read from the kernel is our base chain.
func sameChain(got, want *nftables.Chain) bool {
	return got.Type == want.Type &&
		got.Hooknum != nil && *got.Hooknum == *want.Hooknum &&
		got.Priority != nil && *got.Priority == *want.Priority &&
		got.Policy != nil && *got.Policy == *want.Policy
}

// Registers: concatenations are built in consecutive 32-bit registers
// starting at NFT_REG32_00 (8); each field takes its length rounded up to 4
// bytes, which is why set keys pad every field to 4 bytes.
const (
	reg1  = 1 // NFT_REG_1, a 16-byte register, for single comparisons
	reg32 = 8 // NFT_REG32_00
)

// dropRule is the index of the rule counting and dropping refused packets.
const dropRule = 4

// rules returns the chain's rules in order, each tagged with its index. The
// drop rule's counter starts at drops, so that refilling the chain or
// rebuilding the table does not reset it.
func (l layout) rules(drops expr.Counter) []*nftables.Rule {
	exprs := [][]expr.Any{
		// ct state established,related accept
		{
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
			&expr.Bitwise{
				SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0),
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		// iifname "lo" accept
		{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname("lo")},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		// meta nfproto ipv4 ip saddr . meta l4proto . th dport @grants4 accept
		grantRule(unix.NFPROTO_IPV4, 12, 4, grants4Name, grants4ID),
		// meta nfproto ipv6 ip6 saddr . meta l4proto . th dport @grants6 accept
		grantRule(unix.NFPROTO_IPV6, 8, 16, grants6Name, grants6ID),
		// meta l4proto . th dport @protected counter drop
		{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32},
			&expr.Payload{DestRegister: reg32 + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: reg32, SetName: protectedName, SetID: protectedID},
			&drops,
			&expr.Verdict{Kind: expr.VerdictDrop},
		},
	}
	out := make([]*nftables.Rule, len(exprs))
	for i, e := range exprs {
		out[i] = &nftables.Rule{Table: l.table, Chain: l.chain, Exprs: e, UserData: ruleTag(i)}
	}
	return out
}

// grantRule matches family, then looks up source address . l4proto . dport.
// addrOff and addrLen locate the source address in the network header.
func grantRule(family byte, addrOff, addrLen uint32, set string, setID uint32) []expr.Any {
	addrRegs := addrLen / 4
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{family}},
		&expr.Payload{DestRegister: reg32, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32 + addrRegs},
		&expr.Payload{DestRegister: reg32 + addrRegs + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg32, SetName: set, SetID: setID},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// ruleTag is rule i's user data: an nft comment, so `nft list` shows it.
func ruleTag(i int) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, fmt.Sprintf("%s%d", ruleTagPrefix, i))
}

// rulesAreOurs reports whether the chain holds exactly our rules in order,
// judged by their tags.
func rulesAreOurs(got []*nftables.Rule) bool {
	if len(got) != dropRule+1 {
		return false
	}
	for i, r := range got {
		if !bytes.Equal(r.UserData, ruleTag(i)) {
			return false
		}
	}
	return true
}

// dropCounter finds the counter of our drop rule among rules, if any.
func dropCounter(rules []*nftables.Rule) expr.Counter {
	for _, r := range rules {
		if !bytes.Equal(r.UserData, ruleTag(dropRule)) {
			continue
		}
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				return *c
			}
		}
	}
	return expr.Counter{}
}

// ifname pads an interface name as the kernel stores it (IFNAMSIZ bytes).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
