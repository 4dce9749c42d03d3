package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/smallfile"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// Offline break-glass, the agent's side (docs/design.md, "Break-glass").
//
// While connected, the agent persists in its state directory the server's
// break-glass public key (breakglass.pub) and the ids of revoked tokens
// (breakglass-revoked: the list only grows). When the server is
// unreachable, `jitgate agent breakglass` (OfflineBreakGlass) verifies a
// token against the persisted key alone, records the use in an append-only
// log (breakglass.log, fsync'd before anything opens) and adds exactly one
// element (source, protocol, port) with a kernel timeout. The running agent,
// if any, is not asked: the command and the agent serialize on an exclusive
// flock of the log, the agent holding it while it reads the log and applies,
// so neither can undo the other.
//
// The reconcile rule: every use in the log whose token still verifies, is
// not revoked and whose deadline has not passed is part of the desired
// state the agent applies, besides the server's grants (with negative ids,
// which no server grant has). So a full apply or a resync never removes a
// valid break-glass element as "not desired"; it ends at its deadline (the
// kernel timeout), or at the first full apply after the server sent the
// token's revocation. Nothing else the server sends can remove it, and
// nothing in the log can open more than the token allowed: the entry is
// rebuilt from the token, re-verified on every read.
//
// Uses are reported to the server as soon as it answers again
// (POST /api/v1/agent/breakglass, with the token's text, which the server
// verifies itself); an acknowledged use gets a "reported" line in the log.

// The files of offline break-glass in the state directory.
const (
	bgKeyName     = "breakglass.pub"
	bgRevokedName = "breakglass-revoked"
	bgLogName     = "breakglass.log"
)

// maxBGLog bounds what the agent reads of the log (a use is under 5 KiB).
const maxBGLog = 16 << 20

// bgRecord is one line of the log: a use, or the acknowledgement of one.
type bgRecord struct {
	Kind      string        `json:"kind"` // "use" | "reported" | "refused" (the server will not take the report)
	TokenID   string        `json:"token_id"`
	Token     string        `json:"token,omitempty"`
	Target    string        `json:"target,omitempty"`
	Source    string        `json:"source,omitempty"`
	Protocol  string        `json:"protocol,omitempty"`
	Port      uint16        `json:"port,omitempty"`
	Duration  time.Duration `json:"duration_ns,omitempty"`
	UsedAt    time.Time     `json:"used_at,omitzero"`
	ExpiresAt time.Time     `json:"expires_at,omitzero"`
	Operator  string        `json:"operator,omitempty"`
	Reason    string        `json:"reason,omitempty"`
}

// bgLog is the log opened and locked (exclusively) by one process.
type bgLog struct {
	f *os.File
}

// openBGLog opens (creating, 0600) and locks the log of dir, waiting for
// the lock.
func openBGLog(dir string) (*bgLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, bgLogName), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the break-glass log: %w", err)
	}
	if err := waitLock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking the break-glass log: %w", err)
	}
	return &bgLog{f: f}, nil
}

// Close releases the lock.
func (l *bgLog) Close() error { return l.f.Close() }

// maxBGLine bounds one line of the log (a use is under 5 KiB).
const maxBGLine = 64 << 10

// errBGLogDamaged is the kind of a log with a line the agent cannot read
// before its last one: that line may be a use, so the token it spent is
// not known and no new use is accepted (fail closed).
var errBGLogDamaged = errors.New("the break-glass log is damaged")

// records reads every complete line of the log. A torn last line (a crash
// in the middle of an append: no newline after it) is ignored: its use was
// never reported as recorded, so nothing opened for it, and the next append
// cuts it off first (append). Any other line that is not a record (garbage,
// a use without its token id, a line over maxBGLine) makes the log damaged:
// the records read are returned with an error wrapping errBGLogDamaged.
func (l *bgLog) records() ([]bgRecord, error) {
	b, err := smallfile.Read(l.f.Name(), maxBGLog)
	if err != nil {
		return nil, fmt.Errorf("reading the break-glass log: %w", err)
	}
	var out []bgRecord
	var damaged []int
	lines := bytes.Split(b, []byte{'\n'})
	for i, line := range lines[:len(lines)-1] { // the last is empty or torn
		var r bgRecord
		if len(line) > maxBGLine || json.Unmarshal(line, &r) != nil || r.TokenID == "" || r.Kind == "" {
			damaged = append(damaged, i+1)
			continue
		}
		out = append(out, r)
	}
	if len(damaged) > 0 {
		return out, fmt.Errorf("%w: %s line %d is not a record (%d such lines); move it aside only knowing that a token it recorded could then be used again",
			errBGLogDamaged, l.f.Name(), damaged[0], len(damaged))
	}
	return out, nil
}

// cutTornTail removes a torn last line (a crash in the middle of an
// append) so that the next record starts a line of its own: appended after
// the fragment, it was glued to it, unreadable, and the token it spent
// could be used again.
func (l *bgLog) cutTornTail() error {
	fi, err := l.f.Stat()
	if err != nil || fi.Size() == 0 {
		return err
	}
	if fi.Size() > maxBGLog {
		return fmt.Errorf("the break-glass log is larger than %d bytes", maxBGLog)
	}
	b := make([]byte, fi.Size())
	if _, err := l.f.ReadAt(b, 0); err != nil {
		return fmt.Errorf("reading the break-glass log: %w", err)
	}
	if b[len(b)-1] == '\n' {
		return nil
	}
	if err := l.f.Truncate(int64(bytes.LastIndexByte(b, '\n') + 1)); err != nil {
		return fmt.Errorf("cutting a torn line off the break-glass log: %w", err)
	}
	return nil
}

// append writes one line and syncs it: durable before the caller goes on.
func (l *bgLog) append(r bgRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding break-glass record: %w", err)
	}
	if err := l.cutTornTail(); err != nil {
		return err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing the break-glass log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("syncing the break-glass log: %w", err)
	}
	return nil
}

// loadBGKey reads the persisted public key (nil when none was learned).
func loadBGKey(dir string) (ed25519.PublicKey, error) {
	b, err := smallfile.Read(filepath.Join(dir, bgKeyName), 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the break-glass key: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("the break-glass key file %s is damaged", filepath.Join(dir, bgKeyName))
	}
	return k, nil
}

// loadBGRevoked reads the persisted revocations.
func loadBGRevoked(dir string) (map[string]bool, error) {
	b, err := smallfile.Read(filepath.Join(dir, bgRevokedName), 4<<20)
	out := map[string]bool{}
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the break-glass revocations: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out[line] = true
		}
	}
	return out, nil
}

// writeFileAtomic replaces path with data (0600), synced, renamed, and the
// directory synced: a crash leaves the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		defer d.Close()
		return d.Sync()
	}
	return nil
}

// learnBreakGlass persists what a desired state says about break-glass: a
// new key, and revocations not seen before (never forgetting one). Errors
// are logged: they cost the offline path, not the gate.
func (a *Agent) learnBreakGlass(ds wire.DesiredState) {
	if ds.BreakGlassKey != "" && ds.BreakGlassKey != a.bgKey {
		k, err := base64.StdEncoding.DecodeString(ds.BreakGlassKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			a.log.Warn("the server sent a malformed break-glass key; keeping the one persisted")
		} else if err := writeFileAtomic(filepath.Join(a.cfg.StateDir, bgKeyName), []byte(ds.BreakGlassKey+"\n")); err != nil {
			a.log.Error("cannot persist the break-glass key; offline break-glass will not verify", "err", err)
		} else {
			a.bgKey = ds.BreakGlassKey
		}
	}
	if a.bgRevoked == nil {
		r, err := loadBGRevoked(a.cfg.StateDir)
		if err != nil {
			a.log.Error("cannot read the break-glass revocations", "err", err)
			return
		}
		a.bgRevoked = r
	}
	fresh := false
	for _, id := range ds.BreakGlassRevoked {
		if !a.bgRevoked[id] && id != "" && !strings.ContainsAny(id, "\n\r") {
			a.bgRevoked[id] = true
			fresh = true
		}
	}
	if fresh {
		ids := make([]string, 0, len(a.bgRevoked))
		for id := range a.bgRevoked {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		if err := writeFileAtomic(filepath.Join(a.cfg.StateDir, bgRevokedName), []byte(strings.Join(ids, "\n")+"\n")); err != nil {
			a.log.Error("cannot persist break-glass revocations", "err", err)
		}
	}
}

// bgUse is a verified, live use from the log.
type bgUse struct {
	rec   bgRecord
	entry wire.GrantEntry
}

// liveUses are the uses of records that are valid at now for target: the
// token verifies against key, is not revoked, names target and the port,
// the use was recorded before now and before the token's expiry, and its
// deadline (its start plus its duration, at most the token's maximum) has
// not passed.
func liveUses(recs []bgRecord, key ed25519.PublicKey, revoked map[string]bool, target string, now time.Time) []bgUse {
	var out []bgUse
	for _, r := range recs {
		if r.Kind != "use" || revoked[r.TokenID] {
			continue
		}
		tok, err := access.VerifyToken(r.Token, key)
		if err != nil || tok.ID != r.TokenID || r.Target != target || !slices.Contains(tok.Targets, target) ||
			!slices.Contains(tok.Ports, fmt.Sprintf("%d/%s", r.Port, r.Protocol)) || r.Duration <= 0 || r.Duration > tok.MaxDuration {
			continue
		}
		// A use recorded after now means the clock stepped back since:
		// how long it has been open is unknown, and keeping it until its
		// time plus its duration would re-add the element with a fresh
		// kernel timeout past the token's maximum. No honest use is
		// recorded at or after its token's expiry either.
		if r.UsedAt.After(now) || !r.UsedAt.Before(tok.ExpiresAt) {
			continue
		}
		deadline := r.UsedAt.Add(r.Duration)
		if !deadline.After(now) {
			continue
		}
		out = append(out, bgUse{rec: r, entry: wire.GrantEntry{ID: -int64(len(out) + 1), Source: r.Source, Protocol: r.Protocol, Port: r.Port, ExpiresAt: deadline}})
	}
	return out
}

// injectBreakGlass puts the live break-glass uses into the held state
// (replacing those put there before), under the log's lock, which the
// caller holds through the apply, and returns their entries (for a full
// apply of a snapshot as received). Called before every full apply.
func (a *Agent) injectBreakGlass(l *bgLog, now time.Time) []wire.GrantEntry {
	if a.held != nil {
		for id := range a.held.grants {
			if id < 0 {
				a.held.remove(id, 0)
			}
		}
	}
	if l == nil {
		return nil
	}
	recs, err := l.records()
	if err != nil {
		a.log.Error("cannot read the break-glass log; applying without its openings", "err", err)
		return nil
	}
	key, err := loadBGKey(a.cfg.StateDir)
	if err != nil || key == nil {
		return nil
	}
	if a.bgRevoked == nil {
		if a.bgRevoked, err = loadBGRevoked(a.cfg.StateDir); err != nil {
			a.log.Error("cannot read the break-glass revocations; applying without break-glass openings", "err", err)
			return nil
		}
	}
	var out []wire.GrantEntry
	for _, u := range liveUses(recs, key, a.bgRevoked, a.Status().Target, now) {
		out = append(out, u.entry)
		if a.held != nil {
			if hg, err := a.held.convert(u.entry, a.cfg.Mode == firewall.GatewayMode); err == nil {
				a.held.put(u.entry.ID, hg)
			}
		}
	}
	return out
}

// bgReporter is the server call that records an offline use;
// *client.Client implements it.
type bgReporter interface {
	ReportBreakGlassUse(ctx context.Context, u wire.BreakGlassUse) (wire.BreakGlassAlert, error)
}

// reportBreakGlass reports the uses in the log not acknowledged yet, once
// the server answers. A use the server refuses (422: it does not verify
// there) is logged and left for the operator: retrying cannot help.
func (a *Agent) reportBreakGlass(ctx context.Context) {
	rep, ok := a.srv.(bgReporter)
	if !ok {
		return
	}
	fi, err := os.Stat(filepath.Join(a.cfg.StateDir, bgLogName))
	if err != nil || (fi.Size() == a.bgReportedSize && !a.bgPending) {
		return
	}
	l, err := openBGLog(a.cfg.StateDir)
	if err != nil {
		a.log.Error("cannot open the break-glass log", "err", err)
		return
	}
	defer l.Close()
	recs, err := l.records()
	if err != nil {
		a.log.Error("cannot read the break-glass log", "err", err)
		if !errors.Is(err, errBGLogDamaged) {
			return
		}
		// Report the uses that can be read: the access happened.
	}
	done := map[string]bool{}
	for _, r := range recs {
		if r.Kind == "reported" || r.Kind == "refused" {
			done[r.TokenID] = true
		}
	}
	a.bgPending = false
	for _, r := range recs {
		if r.Kind != "use" || done[r.TokenID] {
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, callGrace)
		_, err := rep.ReportBreakGlassUse(callCtx, wire.BreakGlassUse{Token: r.Token, Operator: r.Operator, Source: r.Source, Port: r.Port,
			Protocol: r.Protocol, Duration: wire.Duration(r.Duration), Reason: r.Reason, UsedAt: r.UsedAt})
		cancel()
		if st := client.StatusOf(err); st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests {
			// The server will not take it (its key is not the one that
			// signed the token): retrying cannot help. The use stays in
			// the log, for the operator.
			a.log.Error("the server refused the report of an offline break-glass use; it stays in the log", "token", r.TokenID, "err", err)
			if err := l.append(bgRecord{Kind: "refused", TokenID: r.TokenID}); err != nil {
				a.bgPending = true
			}
			continue
		}
		if err != nil {
			a.bgPending = true
			a.log.Warn("offline break-glass use not reported yet; will retry", "token", r.TokenID, "err", err)
			continue
		}
		if err := l.append(bgRecord{Kind: "reported", TokenID: r.TokenID}); err != nil {
			a.bgPending = true
			a.log.Error("cannot record the break-glass report", "err", err)
			continue
		}
		done[r.TokenID] = true
		a.log.Info("offline break-glass use reported to the server", "token", r.TokenID)
	}
	if fi, err := l.f.Stat(); err == nil {
		a.bgReportedSize = fi.Size()
	}
}

// OfflineRequest is what `jitgate agent breakglass` asks for.
type OfflineRequest struct {
	StateDir string
	Token    string
	Source   string // an address or prefix
	Port     string // "22/tcp"; empty: the token's only port
	Duration time.Duration
	Reason   string
	Operator string
}

// OfflineResult says what was opened.
type OfflineResult struct {
	TokenID  string    `json:"token_id"`
	Target   string    `json:"target"`
	Source   string    `json:"source"`
	Port     string    `json:"port"`
	Deadline time.Time `json:"deadline"`
}

// OfflineBreakGlass verifies req's token offline, records its use and
// opens exactly (source, protocol, port) with a kernel timeout, on backend
// (the running agent, if any, keeps it: see the package notes above). Any
// refusal is one line wrapping access.ErrBreakGlass, and nothing is
// recorded or opened. The kernel's other elements and protected ports are
// kept as they are.
func OfflineBreakGlass(ctx context.Context, req OfflineRequest, backend firewall.Backend, now time.Time) (OfflineResult, error) {
	cred, err := loadCredential(filepath.Join(req.StateDir, credentialName))
	if err != nil {
		return OfflineResult{}, fmt.Errorf("%w: this host's agent is not enrolled (%v)", access.ErrBreakGlass, err)
	}
	key, err := loadBGKey(req.StateDir)
	if err != nil {
		return OfflineResult{}, err
	}
	tok, err := access.VerifyToken(req.Token, key)
	if err != nil {
		return OfflineResult{}, err
	}
	// policy.ParsePrefix as the server parses sources: an IPv4-mapped
	// address or prefix is the IPv4 one (kept as IPv6 it spent the token
	// and opened nothing IPv4 packets match), a zone is refused.
	src, err := policy.ParsePrefix(req.Source)
	if err != nil {
		return OfflineResult{}, fmt.Errorf("%w: --source %q is not an address or prefix", access.ErrBreakGlass, text.Sanitize(req.Source, 80))
	}
	src = src.Masked()
	port := req.Port
	if port == "" {
		if len(tok.Ports) != 1 {
			return OfflineResult{}, fmt.Errorf("%w: token %s covers %s: name one with --port", access.ErrBreakGlass, tok.ID, strings.Join(tok.Ports, ", "))
		}
		port = tok.Ports[0]
	}
	num, proto, err := access.SplitPort(port)
	if err != nil {
		return OfflineResult{}, err
	}
	if strings.ContainsAny(req.Reason, "\r\n") || len(req.Reason) > access.MaxBreakGlassReason {
		return OfflineResult{}, fmt.Errorf("%w: --reason must be one line of at most %d characters", access.ErrBreakGlass, access.MaxBreakGlassReason)
	}
	l, err := openBGLog(req.StateDir)
	if err != nil {
		return OfflineResult{}, err
	}
	defer l.Close()
	recs, err := l.records()
	if errors.Is(err, errBGLogDamaged) {
		return OfflineResult{}, fmt.Errorf("%w: %v", access.ErrBreakGlass, err)
	}
	if err != nil {
		return OfflineResult{}, err
	}
	used := slices.ContainsFunc(recs, func(r bgRecord) bool { return r.Kind == "use" && r.TokenID == tok.ID })
	revoked, err := loadBGRevoked(req.StateDir)
	if err != nil {
		return OfflineResult{}, err
	}
	use := access.Use{Target: cred.Target, Source: src.String(), Port: num, Protocol: proto, Duration: req.Duration}
	if err := tok.Check(use, now, used, revoked[tok.ID]); err != nil {
		return OfflineResult{}, err
	}
	st, err := backend.State(ctx, now)
	if err != nil {
		return OfflineResult{}, fmt.Errorf("reading the firewall (nothing recorded or opened): %w", err)
	}
	if st.Mode != firewall.HostMode {
		return OfflineResult{}, fmt.Errorf("%w: offline break-glass works in host mode only", access.ErrBreakGlass)
	}
	rec := bgRecord{Kind: "use", TokenID: tok.ID, Token: strings.TrimSpace(req.Token), Target: cred.Target, Source: src.String(), Protocol: proto,
		Port: num, Duration: req.Duration, UsedAt: now.UTC(), ExpiresAt: tok.ExpiresAt, Operator: req.Operator, Reason: req.Reason}
	// Durable before anything opens: a crash after this line leaves the
	// token spent, never usable twice.
	if err := l.append(rec); err != nil {
		return OfflineResult{}, err
	}
	p, err := parseProtocol(proto)
	if err != nil {
		return OfflineResult{}, err
	}
	rs := stateRuleset(st, now)
	deadline := now.Add(req.Duration)
	rs.Grants = append(rs.Grants, firewall.Grant{Source: src, Proto: p, Port: num, Expires: deadline})
	if _, err := backend.Apply(ctx, rs, now); err != nil {
		return OfflineResult{}, fmt.Errorf("token %s is recorded as used, but the firewall refused the element (a running agent adds it at its next apply): %w", tok.ID, err)
	}
	return OfflineResult{TokenID: tok.ID, Target: cred.Target, Source: src.String(), Port: port, Deadline: deadline.UTC()}, nil
}

// stateRuleset is the ruleset that keeps what the kernel holds: its
// protected ports and every element, as grants with their deadlines.
func stateRuleset(st firewall.State, now time.Time) firewall.Ruleset {
	rs := firewall.Ruleset{Mode: st.Mode, Protected: st.Protected, CloseEstablished: st.CloseEstablished, Published: st.Published}
	for _, e := range st.Elements {
		if !e.Expires.After(now) {
			continue
		}
		for _, pfx := range rangePrefixes(e.From, e.To) {
			rs.Grants = append(rs.Grants, firewall.Grant{Source: pfx, Dest: e.Dest, Proto: e.Proto, Port: e.Port, Expires: e.Expires})
		}
	}
	return rs
}

// rangePrefixes covers the inclusive range [from, to] with the fewest
// prefixes.
func rangePrefixes(from, to netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for from.IsValid() && from.Compare(to) <= 0 {
		bits := from.BitLen()
		// The widest prefix starting at from that ends at or before to.
		for bits > 0 {
			p := netip.PrefixFrom(from, bits-1).Masked()
			if p.Addr() != from || lastAddr(p).Compare(to) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(from, bits)
		out = append(out, p)
		last := lastAddr(p)
		next := last.Next()
		if !next.IsValid() || next.Compare(last) <= 0 {
			break
		}
		from = next
	}
	return out
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - uint(i%8))
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
