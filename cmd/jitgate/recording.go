package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/wire"
)

// maxRecording bounds what play and verify hold in memory.
const maxRecording = 1 << 30

// fetchRecording downloads session id's recording.
func fetchRecording(ctx context.Context, c *client.Client, id string) ([]byte, string, error) {
	var buf bytes.Buffer
	sha, err := c.Recording(ctx, id, &limitedWriter{w: &buf, n: maxRecording})
	if err != nil {
		return nil, "", err
	}
	return buf.Bytes(), sha, nil
}

type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errors.New("the recording is larger than 1 GiB")
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

func (a *app) newSessionsPlayCmd() *cobra.Command {
	var (
		speed   float64
		maxIdle time.Duration
	)
	cmd := &cobra.Command{
		Use:   "play ID [--speed N]",
		Short: "Play a recorded session's recording in this terminal",
		Long: `Play a recorded session (a port whose rule says record) in this terminal, at its
own pace (--speed 2 plays twice as fast). Pauses longer than --max-idle are
shortened to it. Who may: the session's own principal, and those whose roles
read others' requests on its target.`,
		Example: `  jitgate sessions play s-abcdefghijklmnop --speed 2`,
		Args:    oneArg("session ID"),
	}
	cmd.Flags().Float64Var(&speed, "speed", 1, "playback speed (2: twice as fast)")
	cmd.Flags().Var(newDuration(&maxIdle, 2*time.Second), "max-idle", "longest pause played (0: as recorded)")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if speed <= 0 || speed > 1000 {
			return usagef("--speed %v: must be above 0 and at most 1000", speed)
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		data, _, err := fetchRecording(ctx, c, args[0])
		if err != nil {
			return err
		}
		h, events, err := recording.Parse(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("the recording of %s: %w", args[0], err)
		}
		fmt.Fprintf(a.stderr, "playing %s (%dx%d)\n", h.Title, h.Width, h.Height)
		last := 0.0
		for _, e := range events {
			if e.Code != recording.CodeOutput {
				continue
			}
			wait := time.Duration((e.Time - last) / speed * float64(time.Second))
			if maxIdle > 0 {
				wait = min(wait, maxIdle)
			}
			last = e.Time
			if wait > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(wait):
				}
			}
			_, _ = io.WriteString(a.stdout, e.Data)
		}
		fmt.Fprintln(a.stderr, "\nend of the recording")
		return nil
	})
	return cmd
}

func (a *app) newSessionsVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify ID",
		Short: "Check a recording against its audit event and the audit chain",
		Long: `Download a recorded session's recording, hash it here, and compare its SHA-256 and
size with the session.recorded audit event, then check the audit trail's hash
chain (which covers that event). Success proves the recording is the one
saved when the session ended. Needs a role that reads the audit trail
(auditor, admin). Exits 1 on a mismatch or a broken chain.`,
		Args: oneArg("session ID"),
	}
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		id := args[0]
		c, _, err := a.client()
		if err != nil {
			return err
		}
		xs, err := c.SearchSessions(ctx, client.SessionQuery{ID: id})
		if err != nil {
			return err
		}
		if len(xs) != 1 {
			return fmt.Errorf("session %s: not found (or not visible to you)", id)
		}
		data, _, err := fetchRecording(ctx, c, id)
		if err != nil {
			return err
		}
		sha, size, err := recording.SumReader(bytes.NewReader(data))
		if err != nil {
			return err
		}
		evs, err := c.Audit(ctx, client.AuditFilter{Action: "session.recorded", RequestID: xs[0].RequestID, Target: xs[0].Target, Limit: 10000})
		if err != nil {
			return err
		}
		var ev *wire.AuditEvent
		for i := range evs {
			if evs[i].Details["session"] == id {
				ev = &evs[i]
			}
		}
		if ev == nil {
			return fmt.Errorf("no session.recorded audit event for %s: its recording is not vouched for", id)
		}
		wantSHA, _ := ev.Details["sha256"].(string)
		wantSize, _ := ev.Details["bytes"].(float64)
		chain, err := c.VerifyAudit(ctx)
		if err != nil {
			return err
		}
		ok := sha == wantSHA && size == int64(wantSize) && chain.OK
		if a.jsonOut() {
			if err := a.printJSON(map[string]any{"session": id, "ok": ok, "sha256": sha, "bytes": size, "audit_event": ev.ID,
				"audited_sha256": wantSHA, "audited_bytes": int64(wantSize), "chain_ok": chain.OK}); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(a.stdout, "recording %s: sha256 %s, %d bytes\n", id, sha, size)
			fmt.Fprintf(a.stdout, "audit event #%d (%s): sha256 %s, %d bytes\n", ev.ID, ev.At.Format(time.RFC3339), wantSHA, int64(wantSize))
			if chain.OK {
				fmt.Fprintf(a.stdout, "audit chain: intact (%d events)\n", chain.Events)
			} else {
				fmt.Fprintf(a.stdout, "audit chain: BROKEN at event %d: %s\n", chain.FirstBadID, chain.Problem)
			}
		}
		if !ok {
			if sha != wantSHA || size != int64(wantSize) {
				return fmt.Errorf("the recording of %s does not match its audit event: it was altered", id)
			}
			return errors.New("the audit chain is broken: the audit event cannot be trusted")
		}
		if !a.jsonOut() {
			fmt.Fprintln(a.stdout, "OK: the recording is the one audited when the session ended")
		}
		return nil
	})
	return cmd
}
