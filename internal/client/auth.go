package client

import (
	"context"
	"net/http"

	"github.com/jitgate/jitgate/internal/wire"
)

// StartDeviceLogin begins a single sign-on device login (no token needed).
func (c *Client) StartDeviceLogin(ctx context.Context) (wire.DeviceLogin, error) {
	var out wire.DeviceLogin
	err := c.do(ctx, http.MethodPost, "/api/v1/auth/device", nil, nil, &out)
	return out, err
}

// PollDeviceLogin asks once for the outcome of a device login. While the
// person has not approved yet it returns an *APIError whose Body.Error is
// wire.AuthorizationPending.
func (c *Client) PollDeviceLogin(ctx context.Context, deviceCode string) (wire.Session, error) {
	var out wire.Session
	err := c.do(ctx, http.MethodPost, "/api/v1/auth/device/token", nil, wire.DeviceTokenRequest{DeviceCode: deviceCode}, &out)
	return out, err
}
