// Package sshca signs short-lived SSH user certificates for grants: the
// server is an SSH certificate authority, and a target's sshd that trusts its
// public key (TrustedUserCAKeys) lets a person in for the logins the port
// rule names, until the grant's deadline, without any authorized_keys.
//
// Signing is pure (it takes the signer, the key and the times); the CA key's
// storage is at the edge (LoadOrCreate).
package sshca

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/policy"
)

// Clock skew tolerated between the server and the target: a certificate is
// valid from a minute before it was signed, so a target whose clock lags a
// little still accepts it at once. The end is never moved: it is the grant's
// deadline.
const Backdate = time.Minute

// Request is what one certificate says.
type Request struct {
	// PublicKey is the user's key the certificate is for.
	PublicKey ssh.PublicKey
	// Logins become the certificate's principals: sshd lets the holder in
	// only as one of these users.
	Logins []string
	// RequestID and Principal name the grant; they go into the key id, which
	// sshd logs at each login ("jitgate:req=ID:principal=NAME").
	RequestID string
	Principal string
	// Now is the signing time; NotAfter the grant's deadline.
	Now      time.Time
	NotAfter time.Time
}

// KeyID is the key id a certificate for request id and principal carries.
func KeyID(requestID, principal string) string {
	return "jitgate:req=" + requestID + ":principal=" + principal
}

// Errors Sign returns for a request it cannot sign.
var (
	ErrNoLogins = errors.New("no login names")
	ErrExpired  = errors.New("the grant's deadline has passed")
)

// Permissions are the extensions every certificate carries: a terminal and
// the user's rc file, as an interactive login needs. Deliberately absent:
// agent forwarding, port forwarding and X11 forwarding, so a certificate for
// one port of one target cannot turn the target into a hop onward (the grant
// is for that port, not for what lies behind it). No critical options
// (force-command, source-address): the bastion relay already pins where the
// connection comes from, and source-address would break that path.
var Permissions = map[string]string{"permit-pty": "", "permit-user-rc": ""}

// Sign signs a user certificate for req with the CA signer. rnd is the
// randomness for the nonce and serial (crypto/rand.Reader when nil).
func Sign(ca ssh.Signer, req Request, rnd io.Reader) (*ssh.Certificate, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if req.PublicKey == nil {
		return nil, errors.New("no public key")
	}
	if _, ok := req.PublicKey.(*ssh.Certificate); ok {
		return nil, errors.New("the public key is a certificate, not a plain key")
	}
	if len(req.Logins) == 0 {
		return nil, ErrNoLogins
	}
	if len(req.Logins) > policy.MaxLogins {
		return nil, fmt.Errorf("%d logins: at most %d", len(req.Logins), policy.MaxLogins)
	}
	for _, l := range req.Logins {
		if err := policy.CheckLogin(l); err != nil {
			return nil, fmt.Errorf("login %w", err)
		}
	}
	if req.RequestID == "" {
		return nil, errors.New("no request id")
	}
	if !req.NotAfter.After(req.Now) {
		return nil, ErrExpired
	}
	var serial [8]byte
	if _, err := io.ReadFull(rnd, serial[:]); err != nil {
		return nil, fmt.Errorf("reading a serial: %w", err)
	}
	var s uint64
	for _, b := range serial {
		s = s<<8 | uint64(b)
	}
	perms := make(map[string]string, len(Permissions))
	for k, v := range Permissions {
		perms[k] = v
	}
	cert := &ssh.Certificate{
		Key:             req.PublicKey,
		Serial:          s,
		CertType:        ssh.UserCert,
		KeyId:           KeyID(req.RequestID, req.Principal),
		ValidPrincipals: append([]string(nil), req.Logins...),
		// SSH certificate times are whole seconds; ValidBefore is exclusive
		// in sshd, so the truncated deadline is never later than the grant's.
		ValidAfter:  uint64(req.Now.Add(-Backdate).Unix()),
		ValidBefore: uint64(req.NotAfter.Unix()),
		Permissions: ssh.Permissions{Extensions: perms},
	}
	if err := cert.SignCert(rnd, ca); err != nil {
		return nil, fmt.Errorf("signing the certificate: %w", err)
	}
	return cert, nil
}
