package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// Payload is the generic body of an event: the store's snapshot of it in
// the webhook API's form. The payload format lives here, not in the store.
func Payload(e store.WebhookEvent) wire.WebhookPayload {
	p := wire.WebhookPayload{Event: e.Event, ID: e.ID, At: e.At, Actor: e.Actor, Target: e.Target, RequestID: e.RequestID,
		Reason: e.Reason, Details: e.Details}
	if r := e.Request; r != nil {
		ports := make([]string, len(r.Ports))
		for i, port := range r.Ports {
			ports[i] = port.String()
		}
		source := ""
		if r.Source.IsValid() {
			source = r.Source.String()
		}
		p.Request = &wire.WebhookRequest{Requester: r.Requester, Source: source, Ports: ports, Duration: wire.Duration(r.Duration),
			Reason: r.Reason, State: string(r.State), ExpiresAt: r.ExpiresAt, ApprovalsRequired: r.ApprovalsRequired}
	}
	return p
}

// Body renders a claimed delivery's body in its webhook's format: the
// generic payload (Payload, or the body a delivery enqueued before the
// outbox kept snapshots was given), or Slack's text built from it.
func Body(it store.OutboxItem) ([]byte, error) {
	generic := it.Legacy
	if generic == nil {
		var err error
		if generic, err = json.Marshal(Payload(it.Snapshot)); err != nil {
			return nil, fmt.Errorf("encoding payload: %w", err)
		}
	}
	switch it.Format {
	case store.FormatGeneric:
		return generic, nil
	case store.FormatSlack:
		// Slack's text is built from the generic payload as a receiver
		// reads it, so both formats say the same.
		var p wire.WebhookPayload
		if err := json.Unmarshal(generic, &p); err != nil {
			return nil, fmt.Errorf("decoding payload: %w", err)
		}
		return json.Marshal(map[string]string{"text": SlackText(p)})
	}
	return nil, fmt.Errorf("unknown webhook format %q", it.Format)
}

// slackEscape escapes the characters Slack's mrkdwn gives meaning to, so a
// requester's reason cannot mention @channel or forge a link.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// SlackText is a one-line summary of an event, such as
// ":unlock: alice's request r-… for web-01 22/tcp is active until 15:04 UTC".
func SlackText(p wire.WebhookPayload) string {
	what := fmt.Sprintf("request %s for %s", p.RequestID, p.Target)
	var r wire.WebhookRequest
	if p.Request != nil {
		r = *p.Request
		what = fmt.Sprintf("%s's request %s for %s %s", r.Requester, p.RequestID, p.Target, strings.Join(r.Ports, ", "))
	}
	// by is the end of "was revoked" or "was denied": the stored reason
	// ("revoked by carol: maintenance over") or, without one, the actor.
	by := func(verb string) string {
		if p.Reason != "" {
			return p.Reason
		}
		return verb + " by " + p.Actor
	}
	var s string
	switch p.Event {
	case store.EventRequestPending:
		s = fmt.Sprintf(":raising_hand: %s asks for %s %s from %s for %s (request %s, %s)",
			r.Requester, p.Target, strings.Join(r.Ports, ", "), r.Source, time.Duration(r.Duration), p.RequestID, plural(r.ApprovalsRequired, "approval"))
		if r.Reason != "" {
			s += ": " + r.Reason
		}
	case store.EventRequestApproved:
		s = fmt.Sprintf(":white_check_mark: %s approved %s", p.Actor, what)
		if n, ok := p.Details["approvals"].(float64); ok {
			if need, ok := p.Details["required"].(float64); ok && need > 1 {
				s += fmt.Sprintf(" (%d of %d approvals)", int(n), int(need))
			}
		}
	case store.EventRequestDenied:
		s = fmt.Sprintf(":no_entry: %s was %s", what, by("denied"))
	case store.EventRequestActivated:
		s = fmt.Sprintf(":unlock: %s is active until %s", what, clock(r.ExpiresAt, p.At))
	case store.EventRequestExpiring:
		s = fmt.Sprintf(":alarm_clock: %s expires at %s", what, clock(r.ExpiresAt, p.At))
		if left, ok := p.Details["remaining"].(string); ok {
			s += " (in " + left + ")"
		}
	case store.EventRequestExpired:
		s = fmt.Sprintf(":lock: %s expired", what)
		if p.Reason != "" {
			s += " (" + p.Reason + ")"
		}
	case store.EventRequestRevoked:
		s = fmt.Sprintf(":lock: %s was %s", what, by("revoked"))
	case store.EventAttackSuspected:
		s = fmt.Sprintf(":rotating_light: %s: %s", p.Target, p.Reason)
	case store.EventSessionStarted:
		s = fmt.Sprintf(":link: %s connected to %s %v through the bastion (session %v, %s)", p.Actor, p.Target, p.Details["port"], p.Details["session"], what)
	case store.EventSessionEnded:
		s = fmt.Sprintf(":end: bastion session %v of %v on %s ended: %v", p.Details["session"], p.Details["principal"], p.Target, p.Details["end_reason"])
	case store.EventSessionKilled:
		s = fmt.Sprintf(":scissors: %s ended bastion session %v of %v on %s", p.Actor, p.Details["session"], p.Details["principal"], p.Target)
		if p.Reason != "" {
			s += ": " + p.Reason
		}
	default:
		s = fmt.Sprintf("%s: %s", p.Event, what)
	}
	return slackEscape.Replace(s)
}

// clock renders t as "15:04 UTC", with the date when it is not on the day
// of the event (at).
func clock(t, at time.Time) string {
	t, at = t.UTC(), at.UTC()
	if t.Format(time.DateOnly) == at.Format(time.DateOnly) {
		return t.Format("15:04 UTC")
	}
	return t.Format("2006-01-02 15:04 UTC")
}

func plural(n int, what string) string {
	if n == 1 {
		return "needs 1 " + what
	}
	return fmt.Sprintf("needs %d %ss", n, what)
}
