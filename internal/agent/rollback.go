package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/smallfile"
	"github.com/jitgate/jitgate/internal/wire"
)

// highWaterName is the file in StateDir holding the highest revision the
// agent applied, next to the credential.
const highWaterName = "applied-revision"

// highWaterFormat is the file's one line. The target ties it to the
// credential: a state directory enrolled again as another target starts
// from zero. The revision is fixed-width so that every update is one
// in-place write of the same length: replacing the file by a rename would
// make ext4 flush it on every applied revision (~0.5 ms measured, on the
// grant path); an in-place write costs about a microsecond and is not torn
// by a crash of the agent.
const highWaterFormat = "jitgate applied revision %020d of target %q\n"

// loadHighWater reads the high-water mark once, before the first poll. A
// mark of another target than the credential's is ignored (the directory
// was enrolled again as another target); an unreadable one is an error: the
// agent cannot tell an older server from a current one without it.
func (a *Agent) loadHighWater() error {
	if a.hwLoaded {
		return nil
	}
	b, err := smallfile.Read(a.hwPath, 4096)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && len(b) == 0):
	case err != nil:
		return fmt.Errorf("agent: reading %s: %w", a.hwPath, err)
	default:
		var (
			rev    int64
			target string
		)
		if _, err := fmt.Sscanf(string(b), highWaterFormat, &rev, &target); err != nil || rev < 0 || rev > wire.MaxRevision {
			return fmt.Errorf("agent: %s is not a revision mark (delete it only if this host's server was not restored from an older copy)", a.hwPath)
		}
		if own := a.Status().Target; own != "" && target != "" && target != own {
			a.log.Info("ignoring the applied revision of another target", "file", a.hwPath, "its_target", target, "target", own)
		} else {
			a.highWater = rev
		}
	}
	a.hwLoaded = true
	return nil
}

// saveHighWater writes a.highWater to the mark, in place. It is not
// fsynced: a crash of the agent keeps it; a power loss that loses it also
// empties the kernel's table, so nothing stays open that the mark was
// guarding (and the server's own check remains).
func (a *Agent) saveHighWater() error {
	if a.hwFile == nil {
		if err := os.MkdirAll(filepath.Dir(a.hwPath), 0o700); err != nil {
			return fmt.Errorf("creating state directory: %w", err)
		}
		f, err := os.OpenFile(a.hwPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("opening %s: %w", a.hwPath, err)
		}
		a.hwFile, a.hwSized = f, false
	}
	line := fmt.Sprintf(highWaterFormat, a.highWater, a.Status().Target)
	if n, err := a.hwFile.WriteAt([]byte(line), 0); err != nil || n != len(line) {
		return fmt.Errorf("writing %s: %d bytes, %w", a.hwPath, n, err)
	}
	if !a.hwSized {
		// The first write drops whatever longer content was there; later
		// ones have the same length.
		if err := a.hwFile.Truncate(int64(len(line))); err != nil {
			return fmt.Errorf("writing %s: %w", a.hwPath, err)
		}
		a.hwSized = true
	}
	return nil
}

// closeHighWater closes the mark file (Run's end).
func (a *Agent) closeHighWater() {
	if a.hwFile != nil {
		a.hwFile.Close()
		a.hwFile = nil
	}
}

// removeHighWater deletes the mark (the target was removed).
func removeHighWater(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", path, err)
	}
	return nil
}

// rollback handles a desired state whose revision is lower than one the
// agent already applied: the server's database went back, and the state may
// hold grants that were revoked or expired since. It fails closed: every
// grant leaves the kernel, while every port protected by the refused state,
// by the last state applied or by the kernel table as it is stays protected
// (protection is never flushed). It reports the refusal with its high-water
// mark, so the server ends the target's live grants and moves its revision
// above the mark; until then every answer below the mark is refused again
// (retried with backoff, like a failed apply).
func (a *Agent) rollback(ctx context.Context, cur *received, now time.Time) {
	refusal := fmt.Errorf("refusing revision %d: this agent already applied revision %d, so the server's database went back (restored from an older copy?); "+
		"every grant was removed, protected ports stay closed, until the server moves past revision %d", cur.ds.Revision, a.highWater, a.highWater)
	rs := a.closedRuleset(ctx, cur, now)
	a.index = nil // the kernel no longer holds the grants deltas would be based on
	start := time.Now()
	err := a.claimTable()
	var res firewall.ApplyResult
	if err == nil {
		res, err = a.backend.Apply(ctx, rs, now)
	}
	took := time.Since(start)
	a.failed = true
	a.nextResync = now.Add(a.cfg.ResyncEvery)
	rep := &wire.AgentReport{
		Revision:    cur.ds.Revision,
		Error:       refusal.Error(),
		HighWater:   a.highWater,
		ApplyMillis: float64(took.Microseconds()) / 1000,
		Addresses:   hostAddresses(),
		Version:     a.cfg.Version,
		Mode:        a.cfg.Mode.String(),
		Elements:    a.elements,
	}
	if err != nil {
		rep.Error += fmt.Sprintf("; removing the grants failed, the kernel keeps its previous state: %v", err)
		a.setError(fmt.Errorf("%w; removing the grants failed: %w", refusal, err))
		a.log.Error("the server's revision went back, and removing the grants failed; retrying", "refused_revision", cur.ds.Revision,
			"applied_revision", a.highWater, "err", err)
	} else {
		a.elements = res.Elements
		rep.Elements = res.Elements
		a.setError(refusal)
		if a.refused != cur.ds.Revision || res.Changed {
			a.log.Error("the server's revision went back (its database was restored from an older copy?): refusing its state, every grant removed, protected ports stay closed",
				"refused_revision", cur.ds.Revision, "applied_revision", a.highWater, "removed", res.Removed)
		}
		a.refused = cur.ds.Revision
	}
	a.pending = rep
	if err := a.flushReport(ctx); err != nil {
		a.log.Warn("report not delivered; will retry", "revision", rep.Revision, "err", err)
	}
}

// closedRuleset is the fail-closed gate of a rollback: no grant, no DNAT
// mapping, and the union of the ports protected by the refused state, the
// last applied state and the kernel (after a restart only the kernel knows
// what was protected).
func (a *Agent) closedRuleset(ctx context.Context, cur *received, now time.Time) firewall.Ruleset {
	rs := firewall.Ruleset{Mode: a.cfg.Mode}
	add := func(protected, closeEst []firewall.PortKey) {
		rs.Protected = append(rs.Protected, protected...)
		rs.CloseEstablished = append(rs.CloseEstablished, closeEst...)
	}
	if refused, err := toRuleset(cur.ds, 0, a.cfg.Mode); err == nil {
		add(refused.Protected, refused.CloseEstablished)
		rs.SampleRate = refused.SampleRate
	}
	if a.lastRS != nil {
		add(a.lastRS.Protected, a.lastRS.CloseEstablished)
	}
	if st, err := a.backend.State(ctx, now); err == nil {
		add(st.Protected, st.CloseEstablished)
	}
	slices.SortFunc(rs.Protected, firewall.ComparePorts)
	rs.Protected = slices.Compact(rs.Protected)
	slices.SortFunc(rs.CloseEstablished, firewall.ComparePorts)
	rs.CloseEstablished = slices.Compact(rs.CloseEstablished)
	return rs
}
