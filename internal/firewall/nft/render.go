package nft

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Render returns, in nft syntax, the table Apply would build from scratch
// for rs at now: what `--dry-run` prints. The text is accepted by `nft -f`
// and creates the same objects Apply does, tags included, so a table loaded
// from it is one Apply recognises as its own.
//
// Render works on the ruleset alone: it does not show the difference to what
// the kernel holds.
func Render(rs firewall.Ruleset, now time.Time) string {
	d := desiredState(rs, now)
	var v4, v6 []string
	for _, k := range sortedKeys(keysOf(d.elements)) {
		exp := d.elements[k]
		s := fmt.Sprintf("%s . %s . %d timeout %dms comment %q", renderRange(k.From, k.To), renderProto(k.Proto), k.Port, exp.Sub(now).Milliseconds(), untilComment(exp))
		if k.From.Is4() {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	var prot []string
	for _, k := range d.protected {
		prot = append(prot, fmt.Sprintf("%s . %d", renderProto(k.Proto), k.Port))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", tableName)
	renderSet(&b, protectedName, protectedType.Name, "", prot)
	renderSet(&b, grants4Name, grants4Type.Name, "interval,timeout", v4)
	renderSet(&b, grants6Name, grants6Type.Name, "interval,timeout", v6)
	fmt.Fprintf(&b, "\tchain %s {\n", chainName)
	fmt.Fprintf(&b, "\t\ttype filter hook input priority %d; policy accept;\n", chainPriority)
	for i, r := range []string{
		"ct state established,related accept",
		`iifname "lo" accept`,
		"meta nfproto ipv4 ip saddr . meta l4proto . th dport @" + grants4Name + " accept",
		"meta nfproto ipv6 ip6 saddr . meta l4proto . th dport @" + grants6Name + " accept",
		"meta l4proto . th dport @" + protectedName + " counter drop",
	} {
		fmt.Fprintf(&b, "\t\t%s comment \"%s%d\"\n", r, ruleTagPrefix, i)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func renderSet(b *strings.Builder, name, typ, flags string, elements []string) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", name, typ)
	if flags != "" {
		fmt.Fprintf(b, "\t\tflags %s\n", flags)
	}
	if len(elements) > 0 {
		fmt.Fprintf(b, "\t\telements = {\n\t\t\t%s,\n\t\t}\n", strings.Join(elements, ",\n\t\t\t"))
	}
	b.WriteString("\t}\n")
}

// renderRange writes a range as an address, a prefix, or from-to.
func renderRange(from, to netip.Addr) string {
	if from == to {
		return from.String()
	}
	for bits := from.BitLen() - 1; bits >= 0; bits-- {
		p := netip.PrefixFrom(from, bits)
		if p.Masked().Addr() != from {
			break
		}
		if f, t := firewall.RangeOf(p); f == from && t == to {
			return p.String()
		}
	}
	return from.String() + "-" + to.String()
}

func renderProto(p firewall.Protocol) string {
	switch p {
	case firewall.TCP, firewall.UDP:
		return p.String()
	}
	return fmt.Sprint(uint8(p))
}
