package api

import (
	"github.com/jitgate/jitgate/internal/sshca/sshhost"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// Bounds, in characters, of the text an agent reports. Generous for what
// a real host holds (a DNS name is at most 253 characters, an interface
// name 15, or 128 as an alternative name).
const (
	maxAgentShort  = 64   // addresses, prefixes, protocols
	maxAgentName   = 255  // hostname, version, kernel, process, interface
	maxAgentReason = 1024 // why the agent cannot enforce
	maxAgentError  = 4096 // why applying a revision failed
)

// sanitizeReport makes the text of an agent's report inert and bounded
// before it is stored: control characters (escape sequences, bell,
// newlines) and bidirectional overrides are escaped and lengths cut
// (text.Sanitize). The report is not refused for it: a compromised or
// buggy agent must not blind the server to its host, and what it says
// about its host is shown, never trusted. Numbers and addresses the server
// acts on are checked where they are used.
func sanitizeReport(in *wire.AgentReport) {
	in.Error = text.Sanitize(in.Error, maxAgentError)
	in.Version = text.Sanitize(in.Version, maxAgentName)
	sanitizeAll(in.Addresses, maxAgentShort)
	if inv := in.Inventory; inv != nil {
		inv.Hostname = text.Sanitize(inv.Hostname, maxAgentName)
		inv.Reason = text.Sanitize(inv.Reason, maxAgentReason)
		inv.Kernel = text.Sanitize(inv.Kernel, maxAgentName)
		sanitizeAll(inv.Routes, maxAgentShort)
		for i := range inv.Listening {
			l := &inv.Listening[i]
			l.Address = text.Sanitize(l.Address, maxAgentShort)
			l.Protocol = text.Sanitize(l.Protocol, maxAgentShort)
			l.Process = text.Sanitize(l.Process, maxAgentName)
		}
		inv.SSHHostKeys = sshhost.Clean(inv.SSHHostKeys)
		for i := range inv.Links {
			inv.Links[i].Name = text.Sanitize(inv.Links[i].Name, maxAgentName)
			sanitizeAll(inv.Links[i].Prefixes, maxAgentShort)
		}
	}
	for i := range in.Blocked {
		c := &in.Blocked[i]
		c.Destination = text.Sanitize(c.Destination, maxAgentShort)
		c.Protocol = text.Sanitize(c.Protocol, maxAgentShort)
	}
	for i := range in.BlockedSources {
		b := &in.BlockedSources[i]
		b.Source = text.Sanitize(b.Source, maxAgentShort)
		b.Destination = text.Sanitize(b.Destination, maxAgentShort)
		b.Protocol = text.Sanitize(b.Protocol, maxAgentShort)
	}
}

// sanitizeEnroll is sanitizeReport for what an agent says when it enrolls.
func sanitizeEnroll(in *wire.EnrollRequest) {
	in.Hostname = text.Sanitize(in.Hostname, maxAgentName)
	in.Version = text.Sanitize(in.Version, maxAgentName)
	sanitizeAll(in.Addresses, maxAgentShort)
}

func sanitizeAll(ss []string, max int) {
	for i := range ss {
		ss[i] = text.Sanitize(ss[i], max)
	}
}
