package api

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/sshca"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// The SSH certificate authority's endpoints. POST
// /api/v1/requests/{id}/ssh-certificate signs a user certificate for the
// caller's own live grant (bastion or direct) on an SSH port whose rule
// names the login, valid until the grant's deadline; GET /api/v1/ssh/ca and
// GET /api/v1/agent/ssh-ca give the CA's public key (to a person, and to an
// agent that installs it as sshd's TrustedUserCAKeys).

// errNoCA answers when the server was started without a CA key.
var errNoCA = errStatus(http.StatusServiceUnavailable, "this server has no SSH certificate authority")

// sshCA answers the CA's public key.
func (a *api) sshCA(w http.ResponseWriter, r *http.Request, _ store.Principal) error {
	if a.SSHCA == nil {
		return errNoCA
	}
	writeJSON(w, http.StatusOK, wire.SSHCA{PublicKey: caLine(a.SSHCA.PublicKey())})
	return nil
}

// caLine is the CA key in authorized_keys form, with a comment that says
// whose it is.
func caLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " jitgate-ssh-ca"
}

// sshCertificate signs a certificate for a live grant of request id.
func (a *api) sshCertificate(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if a.SSHCA == nil {
		return errNoCA
	}
	id := r.PathValue("id")
	var in wire.SSHCertificateRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	key, err := parseUserKey(in.PublicKey)
	if err != nil {
		return err
	}
	port := policy.Port{Number: in.Port, Protocol: policy.TCP}
	if port.Number == 0 {
		port.Number = 22
	}
	req, err := a.Store.GetRequest(r.Context(), id)
	if err != nil {
		return err
	}
	// A certificate is the requester's own: nobody signs a login into
	// someone else's grant, whatever roles they hold.
	if req.Requester != p.Name() {
		return fmt.Errorf("request %s is not %s's own: only its requester gets certificates for it: %w", id, p.Name(), errForbidden)
	}
	// Using a grant needs the role that asks for one, in the target's scope
	// (as for a tunnel).
	t, err := a.targetFor(r.Context(), p, authz.CreateRequest, req.Target)
	if err != nil {
		return err
	}
	if req.State != access.Active {
		return fmt.Errorf("request %s is %s, not active: %w", id, req.State, store.ErrConflict)
	}
	if !slices.Contains(req.Ports, port) {
		return invalidField("port", "request %s does not grant %s", id, port)
	}
	if t.Policy == nil {
		return &policy.DenyError{Reason: "the target has no JIT policy"}
	}
	rule, ok := t.Policy.Rule(port)
	if !ok {
		return &policy.DenyError{Rule: port.String(), Reason: "the target's policy does not configure this port"}
	}
	if len(rule.Logins) == 0 {
		return &inputError{status: http.StatusConflict, field: "login", msg: fmt.Sprintf(
			"the rule of %s on %s names no logins: log in with your own key (an admin adds logins with jitgate policy set --login)", port, req.Target)}
	}
	login := in.Login
	if login == "" {
		login = rule.Logins[0]
	}
	if !slices.Contains(rule.Logins, login) {
		return &policy.DenyError{Rule: port.String(), Reason: fmt.Sprintf("login %q is not one the rule names (%s)", login, strings.Join(rule.Logins, ", "))}
	}
	now := a.Now()
	// The grant, not the request, bounds the certificate: its deadline is
	// the grant's expiry, and only a grant still live (on an active
	// request) is signed for.
	g, err := a.Store.BastionGrant(r.Context(), req.Target, p.Name(), port, now)
	if errors.Is(err, store.ErrNotFound) || err == nil && g.RequestID != id {
		return fmt.Errorf("request %s holds no live grant for %s: %w", id, port, store.ErrConflict)
	}
	if err != nil {
		return err
	}
	cert, err := sshca.Sign(a.SSHCA, sshca.Request{PublicKey: key, Logins: []string{login}, RequestID: id, Principal: p.Name(),
		Now: now, NotAfter: g.ExpiresAt}, nil)
	if errors.Is(err, sshca.ErrExpired) {
		return fmt.Errorf("the grant of request %s has ended: %w", id, store.ErrConflict)
	}
	if err != nil {
		return err
	}
	out := wire.SSHCertificate{Certificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))), KeyID: cert.KeyId,
		Principals: cert.ValidPrincipals, ValidAfter: time.Unix(int64(cert.ValidAfter), 0).UTC(),
		ValidBefore: time.Unix(int64(cert.ValidBefore), 0).UTC()}
	// Issued before answered: the trail names every certificate that may
	// log in somewhere (its serial is what sshd logs besides the key id).
	e := audit.Event{At: now, Actor: p.Name(), Action: audit.SSHCertificateIssued, Target: req.Target, RequestID: id,
		Details: map[string]any{"port": port.String(), "login": login, "key_id": cert.KeyId, "serial": fmt.Sprint(cert.Serial),
			"key": ssh.FingerprintSHA256(key), "until": out.ValidBefore.Format(time.RFC3339)}}
	if addr := a.clientAddr(r); addr.IsValid() {
		e.ClientAddr = addr.String()
	}
	if err := a.Store.Audit(r.Context(), e); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseUserKey reads the key to certify: one plain key in authorized_keys
// form, of a type sshd accepts by default (RSA at least 2048 bits).
func parseUserKey(s string) (ssh.PublicKey, error) {
	if strings.TrimSpace(s) == "" {
		return nil, invalidField("public_key", "required: a public key such as \"ssh-ed25519 AAAA...\"")
	}
	if len(s) > 16<<10 {
		return nil, invalidField("public_key", "longer than 16 KiB")
	}
	key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, invalidField("public_key", "not a public key in authorized_keys form: %v", err)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, invalidField("public_key", "one key only")
	}
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	case ssh.KeyAlgoRSA:
		if ck, ok := key.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
				return nil, invalidField("public_key", "an RSA key of %d bits: at least 2048", rk.N.BitLen())
			}
		}
	default:
		return nil, invalidField("public_key", "a %s key: use ed25519, ECDSA or RSA (a certificate is not a key)", key.Type())
	}
	return key, nil
}
