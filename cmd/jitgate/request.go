package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newRequestCmd() *cobra.Command {
	var (
		ports       []string
		source      string
		reason      string
		duration    time.Duration
		wait        bool
		waitTimeout time.Duration
		bastion     bool
		start       string
	)
	cmd := &cobra.Command{
		Use:   "request TARGET --port PORT ... --duration D --reason TEXT [--source my-ip|PREFIX] [--start WHEN] [--wait]",
		Short: "Ask for access to ports of a target",
		Long: `Ask for access to one or more ports of a target from one source (by default the
address the server sees you come from), for a duration no longer than the policy
allows, with a reason. Asking again for the same target, source and port extends
the live grant. With --wait the command follows the request until the port is
open (or the request failed), and fails when it did not open: the server waits
for the agent within the create itself (up to 5 s), so a port that opens at
once costs one exchange, and what is still pending then is followed with
long-polls. A request that
needs approval is waited for until its approval deadline (the server's
--approval-timeout, 1h by default) unless --wait-timeout says otherwise, with
a progress line every 30 s.

With --start the access begins later: at a time of day (22:00, the next one),
a date and time (2026-12-24 22:00, local time unless a zone is given as in
RFC 3339), or after a delay (+30m, 1h). The start may be at most 30 days ahead;
one in the past is refused (up to a minute ago counts as now). Approvers may
approve before the start; your roles and the policy are checked again at the
start, and access ends at start + duration.`,
		Example: `  jitgate request web-01 --port 22 --duration 1h --reason "INC-1234" --wait
  jitgate request win-01 --port 3389 --source 198.51.100.7 --duration 30m --reason "patching"
  jitgate request db-01 --port 5432 --start 22:00 --duration 2h --reason "CHG-42 change window"`,
		Args:              oneArg("TARGET"),
		ValidArgsFunction: a.completeTargets,
	}
	cmd.AddCommand(a.newRequestListCmd(), a.newRequestShowCmd())
	f := cmd.Flags()
	f.StringArrayVarP(&ports, "port", "p", nil, "port: 22, 22/tcp or 53/udp (repeatable)")
	f.StringVar(&source, "source", "my-ip", "source: my-ip, an address or a CIDR prefix")
	f.StringVar(&reason, "reason", "", "why you need access: one line, at most 1000 characters (recorded in the audit trail)")
	f.Var(newDurationUntil(&duration, 0, a.now), "duration", "how long, such as 30m, 1h or 1d, or until a time such as 2026-12-07T18:00Z (required)")
	f.BoolVarP(&wait, "wait", "w", false, "wait until the port is open or the request failed")
	f.BoolVar(&bastion, "bastion", false, "ask for access through the bastion only (jitgate connect, jitgate ssh): no source, nothing opened to your address")
	f.Var(newDuration(&waitTimeout, 2*time.Minute), "wait-timeout", "give up waiting after this long (default 2m; for a request awaiting approval, until its approval deadline; for a scheduled one, counted from its start)")
	_ = cmd.RegisterFlagCompletionFunc("port", a.completePorts)
	f.StringVar(&start, "start", "", "start later: 22:00, 2026-12-24 22:00, RFC 3339, or a delay such as +30m")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if len(ports) == 0 {
			return usagef("name at least one --port")
		}
		if duration == 0 {
			return usagef("--duration is required, such as --duration 1h")
		}
		// The server checks too; this says so before any network round trip.
		if err := policy.CheckReason(strings.TrimSpace(reason)); err != nil {
			return usagef("--reason: %s", strings.TrimPrefix(err.Error(), "reason: "))
		}
		var startsAt *time.Time
		if start != "" {
			at, err := parseStart(start, a.now())
			if err != nil {
				return usagef("--start: %v", err)
			}
			startsAt = &at
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		in := wire.RequestCreate{Target: args[0], Ports: ports, Source: source, Duration: wire.Duration(duration), Reason: reason, Bastion: bastion,
			StartsAt: startsAt}
		if bastion {
			in.Source = ""
		}
		if !wait {
			req, err := c.CreateRequest(ctx, in)
			if err != nil {
				return err
			}
			return a.showRequest(req, false)
		}
		started := a.now()
		req, err := a.createWaiting(ctx, c, in, waitTimeout)
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("wait-timeout") {
			waitTimeout = approvalWait(req, a.now(), waitTimeout)
		}
		if req, err = a.follow(ctx, c, req, started, waitTimeout); err != nil {
			return err
		}
		return a.showRequest(req, true)
	})
	return cmd
}

// showRequest prints req, and fails when the caller waited for it and it is
// not active.
func (a *app) showRequest(req wire.Request, waited bool) error {
	if a.jsonOut() {
		if err := a.printJSON(req); err != nil {
			return err
		}
	} else {
		a.printRequest(a.stdout, req)
	}
	if waited && req.State != "active" {
		return fmt.Errorf("request %s is %s: %s", req.ID, req.State, orDefault(req.Message, "not active"))
	}
	return nil
}

// createWaiting creates a request and lets the server wait, in the same
// exchange, for a pending one to be opened by its agent (up to timeout, and
// at most createWait): the port is usually open when the create answers,
// and the exchange of follow's first long-poll is saved. What is still
// pending then (an agent that is slow or away, approvals) is followed with
// follow's progress lines.
func (a *app) createWaiting(ctx context.Context, c *client.Client, in wire.RequestCreate, timeout time.Duration) (wire.Request, error) {
	return c.CreateRequestWait(ctx, in, min(timeout, createWait))
}

// createWait bounds the server's wait in a create: an agent opens a port in
// milliseconds; one that takes longer is reported with a progress line
// within seconds, as before.
const createWait = 5 * time.Second

// parseStart reads a --start value at now (in now's location): a delay
// ("+30m", "1h"), a time of day ("22:00", "22:00:30": the next one, today or
// tomorrow), a local date and time ("2026-12-24 22:00", "2026-12-24T22:00"),
// or an RFC 3339 time with its zone. The server decides whether it is too
// early or too far.
func parseStart(s string, now time.Time) (time.Time, error) {
	t, err := parseInstant(s, now, false)
	switch {
	case errors.Is(err, errInPast):
		return time.Time{}, fmt.Errorf("%q is in the past: give a delay such as +30m or a later time", s)
	case err != nil || strings.TrimSpace(s) == "":
		return time.Time{}, fmt.Errorf("%q is not a start: use a time of day (22:00), a date and time (2026-12-24 22:00), RFC 3339, or a delay (+30m, 2h, 1d)", s)
	}
	return t, nil
}

// follow long-polls a request until it is active or ended (or timeout
// after started, when the wait began: the create may have waited already),
// printing each change: approvals, the agent opening the port.
func (a *app) follow(ctx context.Context, c *client.Client, req wire.Request, started time.Time, timeout time.Duration) (wire.Request, error) {
	deadline := started.Add(timeout)
	w := a.progress()
	fmt.Fprintf(w, "request %s: %s\n", esc(req.ID), esc(describeState(req)))
	for req.State == "pending" || req.State == "pending_approval" || req.State == "scheduled" {
		if req.StartsAt != nil && req.StartsAt.Add(timeout).After(deadline) {
			// A scheduled request: the wait counts from its start.
			deadline = req.StartsAt.Add(timeout)
		}
		left := deadline.Sub(a.now())
		if left <= 0 {
			return req, fmt.Errorf("request %s still %s after %s; follow it with 'jitgate requests %s'", req.ID, req.State, fmtDuration(timeout), req.ID)
		}
		next, err := c.WaitRequestVersion(ctx, req.ID, req.Version, min(left, a.progressEvery).String())
		if err != nil {
			return req, err
		}
		switch {
		case next.Version != req.Version || next.State != req.State:
			fmt.Fprintf(w, "request %s: %s\n", esc(next.ID), esc(describeState(next)))
		case next.State == "pending_approval":
			// Nothing moved for a while: say the wait goes on, and until when.
			fmt.Fprintf(w, "request %s: still %s (waited %s; giving up at %s)\n", esc(next.ID), esc(describeState(next)),
				fmtDuration(a.now().Sub(started).Round(time.Second)), fmtClock(deadline, a.now()))
		}
		req = next
	}
	return req, nil
}

// approvalWait is how long --wait follows a request by default: def, or
// for a request awaiting approval until its approval deadline and the
// activation after it (a person may take a while to approve).
func approvalWait(req wire.Request, now time.Time, def time.Duration) time.Duration {
	if req.State != "pending_approval" {
		return def
	}
	if req.ApproveBy != nil && req.ApproveBy.After(now) {
		return req.ApproveBy.Sub(now) + def
	}
	return time.Hour + def
}

func (a *app) printRequest(w io.Writer, r wire.Request) {
	now := a.now()
	tw := a.table("Request:", r.ID)
	row(tw, "Target:", r.Target)
	row(tw, "Ports:", strings.Join(r.Ports, ", "))
	row(tw, "Source:", orDefault(r.Source, "none: through the bastion only"))
	row(tw, "State:", describeState(r))
	if r.Message != "" {
		row(tw, "Message:", r.Message)
	}
	row(tw, "Requester:", r.Requester)
	row(tw, "Reason:", r.Reason)
	row(tw, "Requested:", fmtTime(r.CreatedAt))
	if r.ActivatedAt != nil {
		row(tw, "Active since:", fmtTime(*r.ActivatedAt))
	}
	switch {
	case r.EndedAt != nil:
		row(tw, "Ended:", fmtTime(*r.EndedAt)+" ("+fmtRelative(*r.EndedAt, now)+")")
	case isEnded(r.State):
		row(tw, "Ended:", r.State)
	default:
		row(tw, "Expires:", fmtTime(r.ExpiresAt)+" ("+fmtRelative(r.ExpiresAt, now)+")")
	}
	if r.WindowEnd != nil {
		row(tw, "Clipped:", "to the end of the rule's time window, "+fmtTime(*r.WindowEnd))
	}
	if len(r.ApprovalGroups) > 0 {
		var parts []string
		for _, g := range r.ApprovalGroups {
			parts = append(parts, fmt.Sprintf("%d from %s", g.Count, g.From))
		}
		row(tw, "Approvals by group:", strings.Join(parts, ", ")+" (distinct approvers)")
	}
	if len(r.Extended) > 0 {
		row(tw, "Extended:", strings.Join(r.Extended, ", ")+" (a live grant was extended)")
	}
	if r.SupersededBy != "" {
		row(tw, "Superseded by:", r.SupersededBy)
	}
	if r.Removal != nil {
		row(tw, "Removal:", describeRemoval(r, now))
	}
	for _, d := range r.Decisions {
		as := ""
		if len(d.Member) > 0 {
			as = " (member of " + strings.Join(d.Member, ", ") + ")"
		}
		row(tw, "Decision:", fmt.Sprintf("%s by %s%s at %s %s", d.Decision, d.Approver, as, fmtTime(d.At), d.Reason))
	}
	row(tw, "Version:", fmt.Sprint(r.Version))
	tw.Flush()
	if len(r.Connect) > 0 {
		fmt.Fprintln(w, "Connect:")
		for _, c := range r.Connect {
			fmt.Fprintln(w, "  "+esc(c))
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// newRequestsCmd is "jitgate requests [ID]"; "request list" and "request
// show ID" are the same command under the singular noun.
func (a *app) newRequestsCmd() *cobra.Command {
	var (
		f       client.RequestFilter
		pending bool
		labels  []string
	)
	cmd := &cobra.Command{
		Use:   "requests [ID] [--active] [--target NAME] [--state STATE] [-l KEY=VALUE]",
		Short: "List access requests, or show one",
		Example: `  jitgate requests --active
  jitgate requests -l group=prod -o wide
  jitgate requests r-abcdefgh
  jitgate requests --jq '.[] | select(.state == "active") | .id'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("expected at most one request ID, got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: a.completeRequestIDs,
	}
	cmd.Flags().BoolVar(&f.Active, "active", false, "only pending and active requests")
	cmd.Flags().BoolVar(&pending, "pending", false, "only requests awaiting approval")
	cmd.Flags().StringVar(&f.Target, "target", "", "only requests for this target")
	cmd.Flags().StringVar(&f.State, "state", "", "only requests in this state (pending, active, expired, revoked, failed, superseded)")
	addSelectorFlag(cmd, &labels, "only requests for targets with these labels")
	_ = cmd.RegisterFlagCompletionFunc("target", a.completeTargets)
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		sel, err := selectorOf(labels)
		if err != nil {
			return err
		}
		f.Selector = sel
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if len(args) == 1 {
			r, err := c.Request(ctx, args[0])
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(r)
			}
			a.printRequest(a.stdout, r)
			return nil
		}
		if pending {
			if f.State != "" && f.State != "pending_approval" {
				return usagef("--pending and --state %s contradict each other", f.State)
			}
			f.State = "pending_approval"
		}
		rs, err := c.Requests(ctx, f)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(rs))
		}
		if len(rs) == 0 {
			fmt.Fprintln(a.stderr, "no requests")
			return nil
		}
		return a.printRequestTable(rs)
	})
	return cmd
}

// printRequestTable writes requests as a table (more columns with -o
// wide), each row in its state's colour when colour is on.
func (a *app) printRequestTable(rs []wire.Request) error {
	now := a.now()
	color := a.color()
	var buf bytes.Buffer
	out := a.stdout
	if color {
		out = text.NewWriter(&buf)
	}
	header := []string{"ID", "TARGET", "REQUESTER", "SOURCE", "PORTS", "STATE", "ENDS"}
	if a.wide() {
		header = append(header, "REQUESTED", "DURATION", "APPROVALS", "REASON")
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	colors := []string{""}
	for _, r := range rs {
		state := r.State
		if r.Removal != nil && r.Removal.State == "unconfirmed" {
			state += " (removal unconfirmed)"
		}
		cells := []string{r.ID, r.Target, r.Requester, r.Source, strings.Join(r.Ports, ","), state, fmtEnds(r, now)}
		if a.wide() {
			approvals := ""
			if r.ApprovalsRequired > 0 {
				approvals = fmt.Sprintf("%d/%d", countApprovals(r), r.ApprovalsRequired)
				for i, m := range r.MissingApprovals {
					sep := ", "
					if i == 0 {
						sep = " missing "
					}
					approvals += fmt.Sprintf("%s%d %s", sep, m.Count, m.From)
				}
			}
			cells = append(cells, fmtTime(r.CreatedAt), fmtDuration(time.Duration(r.Duration)), approvals, r.Reason)
		}
		row(tw, cells...)
		colors = append(colors, stateColor(r.State))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if color {
		return a.paintLines(buf.Bytes(), colors)
	}
	return nil
}

// fmtEnds says when a request ends, or when it ended: an ended request
// never shows "in 59m" from the deadline it no longer has.
func fmtEnds(r wire.Request, now time.Time) string {
	if r.EndedAt != nil {
		return "ended " + fmtRelative(*r.EndedAt, now)
	}
	switch r.State {
	case "active", "pending":
		return fmtRelative(r.ExpiresAt, now)
	case "pending_approval":
		if r.ApproveBy != nil {
			return "approve " + fmtRelative(*r.ApproveBy, now)
		}
		return "awaiting approval"
	}
	if isEnded(r.State) {
		// A server older than ended_at: the end is not known exactly.
		return "ended"
	}
	return fmtRelative(r.ExpiresAt, now)
}

// isEnded reports whether a request state is final.
func isEnded(state string) bool {
	switch state {
	case "expired", "revoked", "denied", "failed", "superseded":
		return true
	}
	return false
}

// countApprovals counts the approvals a request has.
func countApprovals(r wire.Request) int {
	n := 0
	for _, d := range r.Decisions {
		if d.Decision == "approve" {
			n++
		}
	}
	return n
}

// newRequestListCmd is "request list" (alias ls): "requests" under the
// singular noun, as kubectl and gh spell lists.
func (a *app) newRequestListCmd() *cobra.Command {
	cmd := a.newRequestsCmd()
	cmd.Use = "list [--active] [--target NAME] [--state STATE] [-l KEY=VALUE]"
	cmd.Aliases = []string{"ls"}
	cmd.Short = "List access requests (same as jitgate requests)"
	cmd.Example = "  jitgate request list --active -o wide"
	cmd.Args = noArgs
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	return cmd
}

// newRequestShowCmd is "request show ID": "requests ID".
func (a *app) newRequestShowCmd() *cobra.Command {
	cmd := a.newRequestsCmd()
	cmd.Use = "show ID"
	cmd.Short = "Show one request (same as jitgate requests ID)"
	cmd.Example = "  jitgate request show r-abcdefgh -o yaml"
	cmd.Args = oneArg("request ID")
	return cmd
}

func (a *app) newRevokeCmd() *cobra.Command {
	var (
		reason string
		wait   time.Duration
		cf     confirmFlags
	)
	cmd := &cobra.Command{
		Use:   "revoke ID [--reason TEXT] [--wait D] [--yes] [--dry-run]",
		Short: "End a request at once: its ports close when its agent applies that",
		Long: `End a request at once. The server takes its grants out of the desired state
immediately; the ports close when the target's agent applies that, which it
confirms as it confirms an activation. The command waits up to --wait for that
confirmation and says whether it came. When it did not (the agent is offline),
the request shows the removal as unconfirmed until the agent reports, and the
kernel closes the grant by its deadline at the latest, whatever happens.

A request that was extended (asked for again, so its grant moved to the newer
request) is revoked with every request that carries its grants now; when it
was fully superseded, the command names the request it revoked instead.

On a terminal the command asks before revoking; --yes skips the question
and is needed when standard input is not a terminal. --dry-run names the
request that would be revoked and changes nothing.`,
		Example: `  jitgate revoke r-abcdefgh --reason "done"
  jitgate revoke r-abcdefgh --yes      # in a script`,
		Args:              oneArg("request ID"),
		ValidArgsFunction: a.completeRequestIDs,
	}
	addConfirmFlags(cmd, &cf)
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	cmd.Flags().Var(newWaitDuration(&wait, 5*time.Second), "wait", "how long to wait for the agent to confirm the ports closed (0: do not wait)")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if !cf.yes {
			cur, err := c.Request(ctx, args[0])
			if err != nil {
				return err
			}
			what := fmt.Sprintf("revoke request %s (%s %s from %s, %s, %s)", cur.ID, cur.Target, strings.Join(cur.Ports, ","), orDefault(cur.Source, "the bastion"), cur.Requester, cur.State)
			if done, err := a.guard(cf, what); done || err != nil {
				return err
			}
		}
		r, err := c.Revoke(ctx, args[0], reason)
		if err != nil {
			return err
		}
		if r, err = a.awaitRemoval(ctx, c, r, wait); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(r)
		}
		if r.ID != args[0] {
			// It was extended: the request carrying its grant was revoked.
			fmt.Fprintf(a.stdout, "request %s was extended by request %s: %s revoked; %s\n", esc(args[0]), esc(r.ID), esc(r.ID), esc(describeRemoval(r, a.now())))
			return nil
		}
		fmt.Fprintf(a.stdout, "request %s revoked; %s\n", esc(r.ID), esc(describeRemoval(r, a.now())))
		return nil
	})
	return cmd
}

// awaitRemoval long-polls an ended request until its agent confirmed the
// removal of its grants, or for at most wait.
func (a *app) awaitRemoval(ctx context.Context, c *client.Client, r wire.Request, wait time.Duration) (wire.Request, error) {
	deadline := a.now().Add(wait)
	// An agent that is not connected will not confirm within seconds.
	for r.Removal != nil && r.Removal.State == "unconfirmed" && r.Removal.Agent != "" && r.Removal.AgentState == "connected" {
		left := deadline.Sub(a.now())
		if left <= 0 {
			break
		}
		next, err := c.WaitRequestVersion(ctx, r.ID, r.Version, min(left, 30*time.Second).String())
		if err != nil {
			return r, err
		}
		r = next
	}
	return r, nil
}

// describeRemoval says, after a request ended, whether its ports are known
// to be closed: never "closes now" before the agent confirmed it.
func describeRemoval(r wire.Request, now time.Time) string {
	ports := strings.Join(r.Ports, ", ")
	rm := r.Removal
	switch {
	case rm == nil:
		if r.ActivatedAt == nil {
			return "it held no open port"
		}
		return ports + " closed"
	case rm.State == "confirmed":
		at := ""
		if rm.ConfirmedAt != nil {
			at = " at " + fmtTime(*rm.ConfirmedAt)
		}
		return fmt.Sprintf("%s closed: the agent of %s confirmed it%s", ports, rm.Agent, at)
	case rm.State == "deadline_passed":
		return fmt.Sprintf("%s closed by the kernel at its deadline %s (the agent never confirmed the removal)", ports, fmtTime(derefTime(rm.ClosesBy)))
	}
	closes := ""
	if rm.ClosesBy != nil {
		closes = fmt.Sprintf("; the kernel closes %s by %s (%s) at the latest", ports, fmtTime(*rm.ClosesBy), fmtRelative(*rm.ClosesBy, now))
	}
	if rm.Agent == "" {
		return "removal not confirmed: the target was removed, so no agent will confirm it" + closes
	}
	agent := rm.AgentState
	switch {
	case rm.AgentLastSeen != nil && rm.AgentState != "connected":
		agent = fmt.Sprintf("%s, offline since %s", rm.AgentState, fmtTime(*rm.AgentLastSeen))
	case rm.AgentLastSeen != nil:
		agent = fmt.Sprintf("%s, last seen %s", rm.AgentState, fmtTime(*rm.AgentLastSeen))
	}
	return fmt.Sprintf("removal not yet confirmed by the agent of %s (%s, since %s)%s", rm.Agent, agent, fmtTime(rm.Since), closes)
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
