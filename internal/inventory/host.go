package inventory

// Host is what an agent reported of its host: the domain form of the
// agent's report, which the API converts (internal/api/convert.go) and the
// store keeps. The JSON tags are the form stored in targets.inventory; they
// match the agent's wire form, so rows written before this type existed
// read the same (TestInventoryStoredForm in internal/api keeps them equal).
type Host struct {
	Hostname string `json:"hostname,omitempty"`
	// Listening are the sockets the host listens on.
	Listening []Listener `json:"listening,omitempty"`
	// CanEnforce is false when the agent cannot program the firewall;
	// Reason then says why.
	CanEnforce bool   `json:"can_enforce"`
	Reason     string `json:"reason,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	// Routes are the prefixes a gateway forwards to.
	Routes []string `json:"routes,omitempty"`
	// Links are a gateway's interfaces with the prefixes routed out of each
	// (see ClientSide).
	Links []Link `json:"links,omitempty"`
	// SSHHostKeys are the host's SSH host public keys in authorized_keys
	// form without comment.
	SSHHostKeys []string `json:"ssh_host_keys,omitempty"`
}

// Link is one network interface of a gateway.
type Link struct {
	Name     string   `json:"name"`
	Prefixes []string `json:"prefixes,omitempty"`
	// Default is true when a default route leaves through this interface.
	Default bool `json:"default,omitempty"`
}

// Listener is one listening socket.
type Listener struct {
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Process  string `json:"process,omitempty"`
}
