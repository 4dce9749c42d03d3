package api

import "sync"

// Hub wakes long-polls (agents waiting for desired state, clients waiting
// for a request to change) when a target's state changes. A waiter takes the
// channel before reading state, so a change committed between the read and
// the wait is never missed: the channel is already closed.
type Hub struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{ch: map[string]chan struct{}{}} }

// Watch returns a channel closed at the next change of target.
func (h *Hub) Watch(target string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.ch[target]
	if !ok {
		c = make(chan struct{})
		h.ch[target] = c
	}
	return c
}

// Notify wakes every watcher of the targets.
func (h *Hub) Notify(targets ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range targets {
		if c, ok := h.ch[t]; ok {
			close(c)
			delete(h.ch, t)
		}
	}
}
