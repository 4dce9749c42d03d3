package wire

import "time"

// DeviceLogin is the answer to POST /api/v1/auth/device: what the person
// opens and types at the identity provider, and how the CLI polls.
type DeviceLogin struct {
	// DeviceCode is jitgate's opaque handle of this login, for polling.
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete,omitempty"`
	// Interval is how many seconds to wait between polls.
	Interval int `json:"interval"`
	// ExpiresIn is how many seconds the codes stay valid.
	ExpiresIn int `json:"expires_in"`
}

// DeviceTokenRequest is the body of POST /api/v1/auth/device/token.
type DeviceTokenRequest struct {
	DeviceCode string `json:"device_code"`
}

// Session is a session token created by a login; the token is shown once.
type Session struct {
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	User      string    `json:"user"`
	Groups    []string  `json:"groups"`
}

// The error codes of the device token endpoint (RFC 8628, section 3.5).
const (
	AuthorizationPending = "authorization_pending"
	AccessDenied         = "access_denied"
	ExpiredToken         = "expired_token"
)
