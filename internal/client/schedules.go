package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/jitgate/jitgate/internal/wire"
)

// CreateSchedule adds a recurring access schedule.
func (c *Client) CreateSchedule(ctx context.Context, in wire.ScheduleCreate) (wire.Schedule, error) {
	var out wire.Schedule
	err := c.do(ctx, http.MethodPost, "/api/v1/schedules", nil, in, &out)
	return out, err
}

// Schedules lists the schedules the caller may see.
func (c *Client) Schedules(ctx context.Context) ([]wire.Schedule, error) {
	var out []wire.Schedule
	err := c.do(ctx, http.MethodGet, "/api/v1/schedules", nil, nil, &out)
	return out, err
}

// DeleteSchedule removes a schedule: no occurrence after it.
func (c *Client) DeleteSchedule(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/schedules/"+url.PathEscape(id), nil, nil, nil)
}
