package access

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Break-glass: access opened in an emergency without waiting for approvers.
// Online, a principal holding the breakglass role opens a rule's port within
// the rule's source and duration limits, capped by the server
// (DefaultBreakGlassMax), with a mandatory reason; offline, an operator on
// the host presents a token the server signed in advance and the agent
// verifies it alone (VerifyToken, Token.Check). Either way it is audited,
// sent to every webhook and raised as an alert until an auditor reviews it.

// DefaultBreakGlassMax caps the duration of an online break-glass grant
// unless the server is configured otherwise.
const DefaultBreakGlassMax = time.Hour

// MaxBreakGlassReason bounds a break-glass reason, in characters.
const MaxBreakGlassReason = 500

// ErrBreakGlass is the kind of every refusal of a break-glass (a bad
// reason, a duration over its cap, a token that does not verify or does not
// cover what is asked).
var ErrBreakGlass = errors.New("break-glass refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBreakGlass, fmt.Sprintf(format, args...))
}

// CheckBreakGlass checks what an online break-glass asks for beyond the
// rule's own limits: a reason (non-empty, at most MaxBreakGlassReason
// characters, one line) and a duration within the server's cap.
func CheckBreakGlass(reason string, d, capDur time.Duration) error {
	r := strings.TrimSpace(reason)
	switch {
	case r == "":
		return refuse("a reason is mandatory")
	case utf8.RuneCountInString(r) > MaxBreakGlassReason:
		return refuse("the reason is longer than %d characters", MaxBreakGlassReason)
	case strings.ContainsAny(r, "\r\n"):
		return refuse("the reason must be one line")
	case d <= 0:
		return refuse("duration must be positive")
	case capDur > 0 && d > capDur:
		return refuse("duration %s exceeds the break-glass cap of %s", d, capDur)
	}
	return nil
}

// Token is an offline break-glass credential: what the server signed.
// Ports are "22/tcp" or "53/udp".
type Token struct {
	ID          string        `json:"id"`
	Targets     []string      `json:"targets"`
	Ports       []string      `json:"ports"`
	MaxDuration time.Duration `json:"max_duration_ns"`
	IssuedAt    time.Time     `json:"issued_at"`
	ExpiresAt   time.Time     `json:"expires_at"`
	IssuedBy    string        `json:"issued_by"`
}

// tokenPrefix versions the token format; tokenContext separates the
// signature from every other use of the key.
const (
	tokenPrefix  = "jgbg1."
	tokenContext = "jitgate break-glass token v1\n"
	// MaxTokenLen bounds a token's text: nothing longer is decoded.
	MaxTokenLen = 4096
)

// Validate checks a token's fields before it is signed (and after it is
// verified): one or more targets and ports, a positive maximum duration, an
// expiry after its issue.
func (t Token) Validate() error {
	switch {
	case t.ID == "" || len(t.ID) > 64:
		return refuse("token has no valid id")
	case len(t.Targets) == 0:
		return refuse("token names no target")
	case len(t.Ports) == 0:
		return refuse("token names no port")
	case t.MaxDuration <= 0:
		return refuse("token has no positive maximum duration")
	case !t.ExpiresAt.After(t.IssuedAt):
		return refuse("token expires before it is issued")
	}
	for _, p := range t.Ports {
		if _, _, err := SplitPort(p); err != nil {
			return err
		}
	}
	return nil
}

// SplitPort parses "22/tcp" or "53/udp" (the token's port form).
func SplitPort(s string) (uint16, string, error) {
	num, proto, ok := strings.Cut(s, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if !ok || err != nil || n == 0 || (proto != "tcp" && proto != "udp") {
		return 0, "", refuse("port %q: use NUMBER/tcp or NUMBER/udp", s)
	}
	return uint16(n), proto, nil
}

// Sign returns the token's text, signed with key.
func (t Token) Sign(key ed25519.PrivateKey) (string, error) {
	if err := t.Validate(); err != nil {
		return "", err
	}
	body, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encoding break-glass token: %w", err)
	}
	sig := ed25519.Sign(key, append([]byte(tokenContext), body...))
	enc := base64.RawURLEncoding
	return tokenPrefix + enc.EncodeToString(body) + "." + enc.EncodeToString(sig), nil
}

// ErrTokenSignature is the kind of a token whose signature does not verify
// (besides ErrBreakGlass).
var ErrTokenSignature = errors.New("the token's signature does not verify against the server's key (forged, altered, or signed by another server)")

// ReadTokenUnverified returns the token raw carries WITHOUT checking its
// signature: only for recording what an agent reports it opened with a
// token the server's key does not verify (the access happened), never to
// decide anything.
func ReadTokenUnverified(raw string) (Token, error) {
	raw = strings.TrimSpace(raw)
	rest, ok := strings.CutPrefix(raw, tokenPrefix)
	if !ok || len(raw) > MaxTokenLen {
		return Token{}, refuse("malformed token")
	}
	b64body, _, _ := strings.Cut(rest, ".")
	body, err := base64.RawURLEncoding.DecodeString(b64body)
	if err != nil {
		return Token{}, refuse("malformed token: not base64url")
	}
	var t Token
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Token{}, refuse("malformed token body: %v", err)
	}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// VerifyToken checks raw's signature against pub and returns the token it
// carries. It decides nothing about what the token covers (Check does).
func VerifyToken(raw string, pub ed25519.PublicKey) (Token, error) {
	raw = strings.TrimSpace(raw)
	if len(pub) != ed25519.PublicKeySize {
		return Token{}, refuse("no server public key to verify the token against (the agent learns it while connected)")
	}
	if len(raw) > MaxTokenLen {
		return Token{}, refuse("malformed token: longer than %d bytes", MaxTokenLen)
	}
	rest, ok := strings.CutPrefix(raw, tokenPrefix)
	if !ok {
		return Token{}, refuse("malformed token: it does not start with %q", tokenPrefix)
	}
	b64body, b64sig, ok := strings.Cut(rest, ".")
	enc := base64.RawURLEncoding
	body, err1 := enc.DecodeString(b64body)
	sig, err2 := enc.DecodeString(b64sig)
	if !ok || err1 != nil || err2 != nil || len(sig) != ed25519.SignatureSize {
		return Token{}, refuse("malformed token: not two base64url parts")
	}
	if !ed25519.Verify(pub, append([]byte(tokenContext), body...), sig) {
		return Token{}, fmt.Errorf("%w: %w", ErrBreakGlass, ErrTokenSignature)
	}
	var t Token
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Token{}, refuse("malformed token body: %v", err)
	}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// Use is one use of a token: what it opens on which target.
type Use struct {
	Target   string
	Source   string // canonical prefix, for the record
	Port     uint16
	Protocol string
	Duration time.Duration
}

// Check decides whether t covers u at now, given whether its id was used
// before or revoked. Each refusal says why in one line.
func (t Token) Check(u Use, now time.Time, used, revoked bool) error {
	port := fmt.Sprintf("%d/%s", u.Port, u.Protocol)
	switch {
	case revoked:
		return refuse("token %s was revoked", t.ID)
	case used:
		return refuse("token %s was already used (tokens are single-use)", t.ID)
	case !now.Before(t.ExpiresAt):
		return refuse("token %s expired at %s", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
	case now.Before(t.IssuedAt.Add(-5 * time.Minute)):
		return refuse("token %s is issued in the future (%s): check this host's clock", t.ID, t.IssuedAt.UTC().Format(time.RFC3339))
	case !slices.Contains(t.Targets, u.Target):
		return refuse("token %s is for %s, not this target (%s)", t.ID, strings.Join(t.Targets, ", "), u.Target)
	case !slices.Contains(t.Ports, port):
		return refuse("token %s covers %s, not %s", t.ID, strings.Join(t.Ports, ", "), port)
	case u.Duration <= 0:
		return refuse("duration must be positive")
	case !singleAddress(u.Source):
		return refuse("source %s: an offline break-glass opens one address, not a network", u.Source)
	case u.Duration > t.MaxDuration:
		return refuse("duration %s exceeds the token's maximum of %s", u.Duration, t.MaxDuration)
	}
	return nil
}

// singleAddress reports whether s is one address (a /32 or /128 prefix): a
// token binds targets, ports and time, not sources, so what it may open for
// is kept to the least, one address (the default per-request limit of
// ordinary requests too).
func singleAddress(s string) bool {
	p, err := netip.ParsePrefix(s)
	return err == nil && p.IsSingleIP()
}
