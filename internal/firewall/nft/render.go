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
// the kernel holds, and it does not validate rs (Apply does).
func Render(rs firewall.Ruleset, now time.Time) string {
	d := desiredState(rs, now, true)
	l := d.layout
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", tableName)
	for _, s := range l.specs {
		kind := "set"
		typ := s.key.Name
		if s.isMap {
			kind, typ = "map", s.key.Name+" : "+s.data.Name
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n", kind, s.name, typ)
		if s.interval() {
			b.WriteString("\t\tflags interval,timeout\n")
		} else if s.timeout() {
			b.WriteString("\t\tflags timeout\n")
		}
		if s.counter {
			b.WriteString("\t\tcounter\n")
		}
		els := d.sets[s.name]
		if els.len() > 0 {
			b.WriteString("\t\telements = {\n")
			for _, id := range els.ids() {
				e := els.byID[id]
				text := e.text()
				if d := e.deadline(); !d.IsZero() {
					text += fmt.Sprintf(" timeout %dms comment %q", d.Sub(now).Milliseconds(), untilComment(d))
				}
				if s.isMap {
					text += " : " + e.valText()
				}
				fmt.Fprintf(&b, "\t\t\t%s,\n", text)
			}
			b.WriteString("\t\t}\n")
		}
		b.WriteString("\t}\n")
	}
	for _, ch := range l.chains {
		typ := "filter"
		if ch.name == preroutingChain {
			typ = "nat"
		}
		fmt.Fprintf(&b, "\tchain %s {\n", ch.name)
		fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", typ, ch.name, ch.priority)
		for i, r := range ch.rules {
			fmt.Fprintf(&b, "\t\t%s comment %q\n", r.text, tagText(i, r.extra))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
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
