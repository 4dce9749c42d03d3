// Package policyfile reads JIT policies written as code: a YAML file that
// names, per target, the ports it gates, for how long a grant may last and
// from where it may be requested.
//
//	policies:
//	  - target: web-01
//	    rules:
//	      - port: 22
//	        protocol: tcp          # default tcp
//	        max_duration: 3h       # default: the server's default (3h)
//	        allowed_sources: [198.51.100.0/24, 2001:db8::/48]  # default: per request
//	        approval: {mode: manual, approvals: 2}            # default: auto
//	        justification: {required: true, min_length: 10, pattern: "^INC-[0-9]+"}
//	        close_established: true  # default false
//	        publish: true            # behind a gateway; default false
//	        mapped_port: 20022       # with publish; default: allocated
//	        access: both             # direct (default), bastion or both
//	        idle_timeout: 15m        # bastion sessions idle this long end; default never
//	        logins: [ubuntu, deploy] # SSH certificate principals; default none
//	        record: true             # with access: bastion; sessions recorded; default false
//	        record_input: true       # with record: keystrokes too; default false
//	        windows: ["Mon-Fri 08:00-18:00 Europe/Berlin"]     # when a grant may start; default always
//	        approvals: [{from: group:dba, count: 1}, {from: group:security, count: 1}]  # by group; default none
//
// The file says every setting of a port rule (a test checks it against
// policy.Rule), so an apply never turns a setting off because the file
// cannot say it: a key left out means what it means in a rule created
// fresh, and Encode writes a file that applies back with no change.
//
// Parse rejects unknown keys and checks everything that can be checked
// without the server (port range, protocol, prefixes, duplicates); errors
// name the line. Limits that depend on the server's configuration (the
// shortest and longest max_duration) are left to the server.
package policyfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// MaxSize bounds the file Parse reads.
const MaxSize = 4 << 20

// File is a parsed, validated policy file.
type File struct {
	Policies []Policy
}

// Policy is the JIT policy of one target.
type Policy struct {
	Target string
	Rules  []Rule
	// Line is where the policy starts in the file.
	Line int
}

// Rule is one gated port.
type Rule struct {
	Port     uint16
	Protocol policy.Protocol
	// MaxDuration is 0 when the file leaves it to the server's default.
	MaxDuration time.Duration
	// AllowedSources are canonical prefixes; empty means the requester
	// names a single address per request.
	AllowedSources []netip.Prefix
	// Approval and Justification are checked by the server; nil means the
	// defaults (auto approval, an optional reason).
	Approval      *wire.Approval
	Justification *wire.Justification
	// CloseEstablished ends established sessions at expiry and revocation.
	CloseEstablished bool
	// Publish maps the port on the gateway's public address (a target
	// behind a gateway); MappedPort asks for a given mapped port (0: one
	// is allocated).
	Publish    bool
	MappedPort uint16
	// Access is direct (""), bastion or both.
	Access policy.Access
	// IdleTimeout ends idle bastion sessions (0: never).
	IdleTimeout time.Duration
	// Logins are the user names SSH certificates may be signed for.
	Logins []string
	// Record and RecordInput: sessions go through the recorded terminal.
	Record, RecordInput bool
	// Windows are the rule's time windows, in canonical form (none: always).
	Windows []string
	// Approvals are the rule's approvals by group (none: none).
	Approvals []wire.GroupApproval
	Line      int
}

// Wire returns the policy as the API's request body.
func (p Policy) Wire() wire.Policy {
	out := wire.Policy{Rules: make([]wire.PortRule, 0, len(p.Rules))}
	for _, r := range p.Rules {
		wr := wire.PortRule{Port: r.Port, Protocol: string(r.Protocol), MaxDuration: wire.Duration(r.MaxDuration),
			Approval: r.Approval, Justification: r.Justification, CloseEstablished: r.CloseEstablished,
			Publish: r.Publish, MappedPort: r.MappedPort, Access: string(r.Access), IdleTimeout: wire.Duration(r.IdleTimeout),
			Logins: r.Logins, Record: r.Record, RecordInput: r.RecordInput, Windows: r.Windows, Approvals: r.Approvals}
		for _, s := range r.AllowedSources {
			wr.AllowedSources = append(wr.AllowedSources, s.String())
		}
		out.Rules = append(out.Rules, wr)
	}
	return out
}

// FromWire returns a target's policy as the API shows it, for Encode.
func FromWire(target string, p wire.Policy) (Policy, error) {
	out := Policy{Target: target, Rules: make([]Rule, 0, len(p.Rules))}
	for i, wr := range p.Rules {
		r := Rule{Port: wr.Port, Protocol: policy.TCP, MaxDuration: time.Duration(wr.MaxDuration),
			CloseEstablished: wr.CloseEstablished, Publish: wr.Publish, MappedPort: wr.MappedPort, IdleTimeout: time.Duration(wr.IdleTimeout),
			Logins: wr.Logins, Record: wr.Record, RecordInput: wr.RecordInput, Windows: wr.Windows, Approvals: wr.Approvals}
		if wr.Access != "" {
			acc, err := policy.ParseAccess(wr.Access)
			if err != nil {
				return Policy{}, fmt.Errorf("%s rules[%d]: %w", target, i, err)
			}
			if acc != policy.AccessDirect {
				r.Access = acc
			}
		}
		if wr.Protocol != "" {
			proto, err := policy.ParseProtocol(wr.Protocol)
			if err != nil {
				return Policy{}, fmt.Errorf("%s rules[%d]: %w", target, i, err)
			}
			r.Protocol = proto
		}
		for _, s := range wr.AllowedSources {
			pfx, err := policy.ParsePrefix(s)
			if err != nil {
				return Policy{}, fmt.Errorf("%s rules[%d]: %w", target, i, err)
			}
			r.AllowedSources = append(r.AllowedSources, pfx)
		}
		if a := wr.Approval; a != nil {
			r.Approval = &wire.Approval{Mode: a.Mode, Approvals: a.Approvals}
		}
		if j := wr.Justification; j != nil && *j != (wire.Justification{}) {
			r.Justification = &wire.Justification{Required: j.Required, MinLength: j.MinLength, Pattern: j.Pattern}
		}
		out.Rules = append(out.Rules, r)
	}
	return out, nil
}

// The shapes Encode writes: every setting a rule has, the defaults left out.
type (
	outFile struct {
		Policies []outPolicy `yaml:"policies"`
	}
	outPolicy struct {
		Target string    `yaml:"target"`
		Rules  []outRule `yaml:"rules"`
	}
	outRule struct {
		Port             uint16       `yaml:"port"`
		Protocol         string       `yaml:"protocol"`
		MaxDuration      string       `yaml:"max_duration,omitempty"`
		AllowedSources   []string     `yaml:"allowed_sources,flow,omitempty"`
		Approval         *outApproval `yaml:"approval,omitempty"`
		Justification    *outJust     `yaml:"justification,omitempty"`
		CloseEstablished bool         `yaml:"close_established,omitempty"`
		Publish          bool         `yaml:"publish,omitempty"`
		MappedPort       uint16       `yaml:"mapped_port,omitempty"`
		Access           string       `yaml:"access,omitempty"`
		IdleTimeout      string       `yaml:"idle_timeout,omitempty"`
		Logins           []string     `yaml:"logins,flow,omitempty"`
		Record           bool         `yaml:"record,omitempty"`
		RecordInput      bool         `yaml:"record_input,omitempty"`
		Windows          []string     `yaml:"windows,omitempty"`
		Approvals        []outGroup   `yaml:"approvals,omitempty"`
	}
	outGroup struct {
		From  string `yaml:"from"`
		Count int    `yaml:"count"`
	}
	outApproval struct {
		Mode      string `yaml:"mode"`
		Approvals int    `yaml:"approvals,omitempty"`
	}
	outJust struct {
		Required  bool   `yaml:"required,omitempty"`
		MinLength int    `yaml:"min_length,omitempty"`
		Pattern   string `yaml:"pattern,omitempty"`
	}
)

// Encode writes the file in the form Parse reads. A file encoded from
// the policies the server holds applies back with no change.
func (f File) Encode(w io.Writer) error {
	out := outFile{Policies: make([]outPolicy, 0, len(f.Policies))}
	for _, p := range f.Policies {
		op := outPolicy{Target: p.Target, Rules: make([]outRule, 0, len(p.Rules))}
		for _, r := range p.Rules {
			or := outRule{Port: r.Port, Protocol: string(r.Protocol), CloseEstablished: r.CloseEstablished,
				Publish: r.Publish, MappedPort: r.MappedPort, Access: string(r.Access), Logins: r.Logins,
				Record: r.Record, RecordInput: r.RecordInput, Windows: r.Windows}
			for _, g := range r.Approvals {
				or.Approvals = append(or.Approvals, outGroup{From: g.From, Count: g.Count})
			}
			if r.IdleTimeout != 0 {
				or.IdleTimeout = policy.FormatDuration(r.IdleTimeout)
			}
			if or.Protocol == "" {
				or.Protocol = string(policy.TCP)
			}
			if r.MaxDuration != 0 {
				or.MaxDuration = policy.FormatDuration(r.MaxDuration)
			}
			for _, s := range r.AllowedSources {
				or.AllowedSources = append(or.AllowedSources, s.String())
			}
			if a := r.Approval; a != nil {
				or.Approval = &outApproval{Mode: a.Mode, Approvals: a.Approvals}
			}
			if j := r.Justification; j != nil && *j != (wire.Justification{}) {
				or.Justification = &outJust{Required: j.Required, MinLength: j.MinLength, Pattern: j.Pattern}
			}
			op.Rules = append(op.Rules, or)
		}
		out.Policies = append(out.Policies, op)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("encoding policy file: %w", err)
	}
	return enc.Close()
}

// Error is a problem in a policy file. Line is 0 when it is not known.
type Error struct {
	Line int
	// Field is the path of the bad value ("policies[0].rules[1].port"), or "".
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// The shapes the decoder fills. Leaves are nodes so that errors can name
// their line and say what was expected in words.
type rawFile struct {
	Policies []rawPolicy `yaml:"policies"`
}

type rawPolicy struct {
	Target yaml.Node `yaml:"target"`
	Rules  []rawRule `yaml:"rules"`
}

type rawRule struct {
	Port           yaml.Node `yaml:"port"`
	Protocol       yaml.Node `yaml:"protocol"`
	MaxDuration    yaml.Node `yaml:"max_duration"`
	AllowedSources yaml.Node `yaml:"allowed_sources"`
	// CloseEstablished, Publish and MappedPort are nodes so that a value
	// of the wrong kind is refused with its line, not read as false.
	CloseEstablished yaml.Node `yaml:"close_established"`
	Publish          yaml.Node `yaml:"publish"`
	MappedPort       yaml.Node `yaml:"mapped_port"`
	Access           yaml.Node `yaml:"access"`
	IdleTimeout      yaml.Node `yaml:"idle_timeout"`
	Logins           yaml.Node `yaml:"logins"`
	Record           yaml.Node `yaml:"record"`
	RecordInput      yaml.Node `yaml:"record_input"`
	Windows          yaml.Node `yaml:"windows"`
	Approvals        yaml.Node `yaml:"approvals"`
	Approval         *struct {
		Mode      string `yaml:"mode"`
		Approvals int    `yaml:"approvals"`
	} `yaml:"approval"`
	Justification *struct {
		Required  bool   `yaml:"required"`
		MinLength int    `yaml:"min_length"`
		Pattern   string `yaml:"pattern"`
	} `yaml:"justification"`
}

// knownKeys lists, per decoded type, the keys it accepts, for the message
// about an unknown one.
var knownKeys = map[string]string{
	"policyfile.rawFile":   "policies",
	"policyfile.rawPolicy": "target, rules",
	"policyfile.rawRule":   ruleKeys,
}

// ruleKeys are the keys of a rule.
const ruleKeys = "port, protocol, max_duration, allowed_sources, approval, justification, close_established, publish, mapped_port, access, idle_timeout, logins, record, record_input, windows, approvals"

// Parse reads and validates a policy file. The error is an *Error when the
// problem is in the file's content.
func Parse(r io.Reader) (File, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return File{}, fmt.Errorf("reading policy file: %w", err)
	}
	if len(data) > MaxSize {
		return File{}, &Error{Msg: fmt.Sprintf("file is larger than %d bytes", MaxSize)}
	}

	var raw rawFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return File{}, &Error{Msg: "file is empty: expected a top-level \"policies:\" list"}
		}
		return File{}, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := 0
		if err == nil {
			line = extra.Line
		}
		return File{}, &Error{Line: line, Msg: "the file holds more than one YAML document; put all policies in one"}
	}
	// The same bytes as a node tree give the line of every list item,
	// including items whose keys are all missing.
	var tree yaml.Node
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return File{}, yamlError(err)
	}
	pos := position{&tree}

	if len(raw.Policies) == 0 {
		return File{}, &Error{Line: pos.line(), Field: "policies", Msg: "the file defines no policies"}
	}
	out := File{Policies: make([]Policy, 0, len(raw.Policies))}
	targets := map[string]int{} // name -> line
	for i, rp := range raw.Policies {
		ppos := pos.key("policies").item(i)
		p, err := parsePolicy(rp, fmt.Sprintf("policies[%d]", i), ppos)
		if err != nil {
			return File{}, err
		}
		if first, dup := targets[p.Target]; dup {
			return File{}, &Error{Line: p.Line, Field: fmt.Sprintf("policies[%d].target", i),
				Msg: fmt.Sprintf("target %q already has a policy at line %d; give each target one entry", p.Target, first)}
		}
		targets[p.Target] = p.Line
		out.Policies = append(out.Policies, p)
	}
	return out, nil
}

func parsePolicy(rp rawPolicy, field string, pos position) (Policy, error) {
	p := Policy{Line: pos.line()}
	rp.Target = deref(rp.Target)
	if rp.Target.Kind == 0 || rp.Target.ShortTag() == "!!null" {
		return Policy{}, &Error{Line: p.Line, Field: field, Msg: "missing \"target\": name the target this policy gates"}
	}
	name, err := scalarString(rp.Target, "a target name")
	if err != nil {
		return Policy{}, &Error{Line: rp.Target.Line, Field: field + ".target", Msg: err.Error()}
	}
	if err := policy.ValidateTargetName(name); err != nil {
		var fe *policy.FieldError
		msg := err.Error()
		if errors.As(err, &fe) {
			msg = fe.Reason
		}
		return Policy{}, &Error{Line: rp.Target.Line, Field: field + ".target", Msg: msg}
	}
	p.Target = name
	if p.Line == 0 {
		p.Line = rp.Target.Line
	}
	if len(rp.Rules) == 0 {
		return Policy{}, &Error{Line: p.Line, Field: field + ".rules", Msg: fmt.Sprintf("policy for %q needs at least one rule", name)}
	}
	seen := map[policy.Port]int{}
	for j, rr := range rp.Rules {
		rfield := fmt.Sprintf("%s.rules[%d]", field, j)
		r, err := parseRule(rr, rfield, pos.key("rules").item(j).line())
		if err != nil {
			return Policy{}, err
		}
		port := policy.Port{Number: r.Port, Protocol: r.Protocol}
		if first, dup := seen[port]; dup {
			return Policy{}, &Error{Line: r.Line, Field: rfield,
				Msg: fmt.Sprintf("port %s is already configured at line %d", port, first)}
		}
		seen[port] = r.Line
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

func parseRule(rr rawRule, field string, line int) (Rule, error) {
	r := Rule{Line: line, Protocol: policy.TCP}
	rr.Port, rr.Protocol = deref(rr.Port), deref(rr.Protocol)
	rr.MaxDuration, rr.AllowedSources = deref(rr.MaxDuration), deref(rr.AllowedSources)
	fail := func(n yaml.Node, sub, msg string) (Rule, error) {
		l := n.Line
		if l == 0 {
			l = line
		}
		return Rule{}, &Error{Line: l, Field: field + sub, Msg: msg}
	}

	if rr.Port.Kind == 0 || rr.Port.ShortTag() == "!!null" {
		return fail(rr.Port, "", "missing \"port\": give a port number from 1 to 65535")
	}
	n, ok := portNumber(rr.Port)
	if !ok {
		hint := ""
		if rr.Port.Kind == yaml.ScalarNode && strings.Contains(rr.Port.Value, "/") {
			hint = "; put the protocol in \"protocol:\""
		}
		return fail(rr.Port, ".port", fmt.Sprintf("%s is not a port number from 1 to 65535%s", describe(rr.Port), hint))
	}
	r.Port = n

	if rr.Protocol.Kind != 0 && rr.Protocol.ShortTag() != "!!null" {
		s, err := scalarString(rr.Protocol, "tcp or udp")
		if err != nil {
			return fail(rr.Protocol, ".protocol", err.Error())
		}
		proto, err := policy.ParseProtocol(s)
		if err != nil {
			return fail(rr.Protocol, ".protocol", fmt.Sprintf("%q must be tcp or udp", s))
		}
		r.Protocol = proto
	}

	if rr.MaxDuration.Kind != 0 && rr.MaxDuration.ShortTag() != "!!null" {
		const want = "a duration such as 90m, 3h or 1h30m"
		if rr.MaxDuration.Kind != yaml.ScalarNode || rr.MaxDuration.ShortTag() != "!!str" {
			return fail(rr.MaxDuration, ".max_duration", fmt.Sprintf("%s is not %s (units: s, m, h)", describe(rr.MaxDuration), want))
		}
		d, err := time.ParseDuration(rr.MaxDuration.Value)
		if err != nil {
			return fail(rr.MaxDuration, ".max_duration", fmt.Sprintf("%q is not %s (units: s, m, h)", rr.MaxDuration.Value, want))
		}
		if d <= 0 {
			return fail(rr.MaxDuration, ".max_duration", fmt.Sprintf("%s must be positive", d))
		}
		r.MaxDuration = d
	}

	switch n := rr.AllowedSources; {
	case n.Kind == 0 || n.ShortTag() == "!!null":
	case n.Kind != yaml.SequenceNode:
		return fail(n, ".allowed_sources", "must be a list of CIDR prefixes such as [198.51.100.0/24, 2001:db8::/48]")
	default:
		for k, item := range n.Content {
			sub := fmt.Sprintf(".allowed_sources[%d]", k)
			item := deref(*item)
			s, err := scalarString(item, "a CIDR prefix")
			if err != nil {
				return fail(item, sub, err.Error())
			}
			pfx, err := parsePrefix(s)
			if err != nil {
				return fail(item, sub, err.Error())
			}
			r.AllowedSources = append(r.AllowedSources, pfx)
		}
	}
	if a := rr.Approval; a != nil {
		if a.Mode != policy.Auto && a.Mode != policy.Manual {
			return fail(rr.Port, ".approval.mode", fmt.Sprintf("%q must be auto or manual", a.Mode))
		}
		r.Approval = &wire.Approval{Mode: a.Mode, Approvals: a.Approvals}
	}
	if j := rr.Justification; j != nil {
		if err := text.Check(j.Pattern); err != nil {
			return fail(rr.Port, ".justification.pattern", err.Error())
		}
		r.Justification = &wire.Justification{Required: j.Required, MinLength: j.MinLength, Pattern: j.Pattern}
	}
	for _, b := range []struct {
		n   yaml.Node
		key string
		dst *bool
	}{{rr.CloseEstablished, "close_established", &r.CloseEstablished}, {rr.Publish, "publish", &r.Publish},
		{rr.Record, "record", &r.Record}, {rr.RecordInput, "record_input", &r.RecordInput}} {
		n := deref(b.n)
		if n.Kind == 0 || n.ShortTag() == "!!null" {
			continue
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(b.dst) != nil {
			return fail(n, "."+b.key, fmt.Sprintf("%s is not true or false", describe(n)))
		}
	}
	if n := deref(rr.MappedPort); n.Kind != 0 && n.ShortTag() != "!!null" {
		mp, ok := portNumber(n)
		if !ok {
			return fail(n, ".mapped_port", fmt.Sprintf("%s is not a port number from 1 to 65535", describe(n)))
		}
		if !r.Publish {
			return fail(n, ".mapped_port", "only a published port takes a mapped port: add \"publish: true\"")
		}
		r.MappedPort = mp
	}
	if n := deref(rr.Access); n.Kind != 0 && n.ShortTag() != "!!null" {
		v, err := scalarString(n, "direct, bastion or both")
		if err != nil {
			return fail(n, ".access", err.Error())
		}
		acc, err := policy.ParseAccess(v)
		if err != nil {
			return fail(n, ".access", fmt.Sprintf("%q must be direct, bastion or both", v))
		}
		if acc != policy.AccessDirect {
			r.Access = acc
		}
	}
	if n := deref(rr.IdleTimeout); n.Kind != 0 && n.ShortTag() != "!!null" {
		const want = "a duration such as 15m or 1h"
		d, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" || err != nil || d <= 0 {
			return fail(n, ".idle_timeout", fmt.Sprintf("%s is not %s (units: s, m, h)", describe(n), want))
		}
		if !r.Access.Bastion() {
			return fail(n, ".idle_timeout", "only a rule reachable through the bastion takes an idle timeout: add \"access: bastion\" (or both)")
		}
		r.IdleTimeout = d
	}
	if n := deref(rr.Logins); n.Kind != 0 && n.ShortTag() != "!!null" {
		if n.Kind != yaml.SequenceNode {
			return fail(n, ".logins", fmt.Sprintf("%s is not a list of login names such as [ubuntu, deploy]", describe(n)))
		}
		for j, e := range n.Content {
			if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!str" {
				return fail(*e, fmt.Sprintf(".logins[%d]", j), fmt.Sprintf("%s is not a login name", describe(*e)))
			}
			if err := policy.CheckLogin(e.Value); err != nil {
				return fail(*e, fmt.Sprintf(".logins[%d]", j), err.Error())
			}
			r.Logins = append(r.Logins, e.Value)
		}
	}
	if n := deref(rr.Windows); n.Kind != 0 && n.ShortTag() != "!!null" {
		if n.Kind != yaml.SequenceNode {
			return fail(n, ".windows", fmt.Sprintf("%s is not a list of windows such as [\"Mon-Fri 08:00-18:00 Europe/Berlin\"]", describe(n)))
		}
		for j, e := range n.Content {
			e := deref(*e)
			if e.Kind != yaml.ScalarNode || e.ShortTag() != "!!str" {
				return fail(e, fmt.Sprintf(".windows[%d]", j), fmt.Sprintf("%s is not a window such as \"Mon-Fri 08:00-18:00 Europe/Berlin\"", describe(e)))
			}
			w, err := policy.ParseWindow(e.Value)
			if err != nil {
				return fail(e, fmt.Sprintf(".windows[%d]", j), err.Error())
			}
			r.Windows = append(r.Windows, w.String())
		}
	}
	if n := deref(rr.Approvals); n.Kind != 0 && n.ShortTag() != "!!null" {
		const want = "a list of approvals by group such as [{from: group:dba, count: 1}]"
		if n.Kind != yaml.SequenceNode {
			return fail(n, ".approvals", fmt.Sprintf("%s is not %s", describe(n), want))
		}
		for j, e := range n.Content {
			sub := fmt.Sprintf(".approvals[%d]", j)
			e := deref(*e)
			if e.Kind != yaml.MappingNode {
				return fail(e, sub, fmt.Sprintf("%s is not {from: group:NAME, count: N}", describe(e)))
			}
			g := wire.GroupApproval{Count: 1}
			for k := 0; k+1 < len(e.Content); k += 2 {
				key, val := e.Content[k].Value, deref(*e.Content[k+1])
				switch key {
				case "from":
					if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!str" {
						return fail(val, sub+".from", fmt.Sprintf("%s is not group:NAME or role:NAME", describe(val)))
					}
					if err := policy.CheckApproverSet(val.Value); err != nil {
						return fail(val, sub+".from", err.Error())
					}
					if kind, name, _ := strings.Cut(val.Value, ":"); kind == "role" {
						if _, err := authz.ParseRole(name); err != nil {
							return fail(val, sub+".from", err.Error())
						}
					}
					g.From = val.Value
				case "count":
					var c int
					if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!int" || val.Decode(&c) != nil || c < 1 || c > policy.MaxApprovals {
						return fail(val, sub+".count", fmt.Sprintf("%s is not a number from 1 to %d", describe(val), policy.MaxApprovals))
					}
					g.Count = c
				default:
					return fail(*e.Content[k], sub, fmt.Sprintf("unknown field %q (known fields: from, count)", key))
				}
			}
			if g.From == "" {
				return fail(e, sub, "missing \"from\": name the group (group:NAME) or role (role:NAME) that approves")
			}
			for _, o := range r.Approvals {
				if o.From == g.From {
					return fail(e, sub+".from", fmt.Sprintf("%s is named twice", g.From))
				}
			}
			r.Approvals = append(r.Approvals, g)
		}
	}
	if r.Record && r.Access != policy.AccessBastion {
		return fail(deref(rr.Record), ".record", "only a rule reached through the bastion alone is recorded: add \"access: bastion\"")
	}
	if r.RecordInput && !r.Record {
		return fail(deref(rr.RecordInput), ".record_input", "only a recorded rule records input: add \"record: true\"")
	}
	return r, nil
}

// portNumber reads 22 or "22".
func portNumber(n yaml.Node) (uint16, bool) {
	if n.Kind != yaml.ScalarNode {
		return 0, false
	}
	var v int64
	switch n.ShortTag() {
	case "!!int":
		if n.Decode(&v) != nil {
			return 0, false
		}
	case "!!str":
		u, err := strconv.ParseUint(strings.TrimSpace(n.Value), 10, 16)
		if err != nil {
			return 0, false
		}
		v = int64(u)
	default:
		return 0, false
	}
	if v < 1 || v > 65535 {
		return 0, false
	}
	return uint16(v), true
}

// parsePrefix accepts a CIDR prefix or a single address and refuses host
// bits, which in a policy are more often a typo than an intent.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := policy.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix such as 198.51.100.0/24 or an address", s)
	}
	if strings.Contains(s, "/") {
		if q, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil && q.Masked() != q {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p)
		}
	}
	return p, nil
}

// deref follows aliases (a bounded number of times: the decoder already
// refused cycles and excessive aliasing).
func deref(n yaml.Node) yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = *n.Alias
	}
	return n
}

// scalarString returns the text of a scalar node, or an error saying what
// was expected instead.
func scalarString(n yaml.Node, want string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("%s is not %s", describe(n), want)
	}
	return n.Value, nil
}

// describe names a node's value for a message.
func describe(n yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return "an empty value"
}

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)
	lineMsg      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// yamlError turns a decoder error into an *Error with the first problem it
// reports, in words that name the accepted keys.
func yamlError(err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			e := &Error{Line: line, Msg: fmt.Sprintf("unknown field %q", m[2])}
			if keys, ok := knownKeys[m[3]]; ok {
				e.Msg += " (known fields: " + keys + ")"
			}
			return e
		}
		msg = strings.Replace(msg, "policyfile.rawFile", "a mapping with \"policies:\"", 1)
		msg = strings.Replace(msg, "[]policyfile.rawPolicy", "a list of policies", 1)
		msg = strings.Replace(msg, "policyfile.rawPolicy", "a policy (target, rules)", 1)
		msg = strings.Replace(msg, "[]policyfile.rawRule", "a list of rules", 1)
		msg = strings.Replace(msg, "policyfile.rawRule", "a rule ("+ruleKeys+")", 1)
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := lineMsg.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Msg: m[2]}
	}
	return &Error{Msg: msg}
}

// position walks the node tree to find where list items start.
type position struct{ n *yaml.Node }

func (p position) resolve() *yaml.Node {
	n := p.n
	for i := 0; n != nil && i < 8; i++ {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return n
}

func (p position) line() int {
	if p.n == nil {
		return 0
	}
	return p.n.Line
}

func (p position) key(k string) position {
	n := p.resolve()
	if n == nil || n.Kind != yaml.MappingNode {
		return position{}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return position{n.Content[i+1]}
		}
	}
	return position{}
}

func (p position) item(i int) position {
	n := p.resolve()
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return position{}
	}
	return position{n.Content[i]}
}
