// Package server wires jitgate's server: the store, the REST API, the
// sweeper that ends what time ends, and the HTTP listener.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"time"

	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/web"
)

// Config is the server's configuration.
type Config struct {
	// Listen is the address to serve on (default 127.0.0.1:8443 with TLS,
	// 127.0.0.1:8080 without).
	Listen string
	// DataDir holds the database (jitgate.db) and the first admin token file.
	DataDir string
	// Database, when set, is the URL of a PostgreSQL database
	// (postgres://...) that holds the state instead of DataDir/jitgate.db;
	// several servers (replicas) may share it. DataDir still holds this
	// server's files (the first admin token, the restore guard's mark).
	Database string
	// TLSCert and TLSKey enable TLS when both are set.
	TLSCert, TLSKey string
	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// resolving "my-ip".
	TrustedProxies []netip.Prefix
	// Limits bound policies and requests.
	Limits policy.Limits
	// ActivationTimeout is how long a request waits for its agent's
	// confirmation before it fails (default 30 s).
	ActivationTimeout time.Duration
	// ApprovalTimeout is how long a request awaits its approvers before it
	// expires (default 1 h).
	ApprovalTimeout time.Duration
	// WriteGatherDelay is store.Config.GatherDelay (0: never gather).
	WriteGatherDelay time.Duration
	// WriteInlineSync is store.Config.InlineSync: the writer fsyncs in its
	// COMMIT instead of beside it.
	WriteInlineSync bool
	// ExpiryWarning is how long before its deadline an active request is
	// announced as expiring (request.expiring; default 10 min; negative:
	// never).
	ExpiryWarning time.Duration
	// WebhookTimeout bounds one webhook delivery attempt (default 10 s).
	WebhookTimeout time.Duration
	// BreakGlassMax caps an online break-glass opening (default 1 h,
	// access.DefaultBreakGlassMax; at most 24 h).
	BreakGlassMax time.Duration
	// WebhookAllowPrivate lets webhooks reach loopback, link-local and
	// private addresses (off: a webhook cannot be aimed at the server's own
	// network, such as a cloud metadata service or an internal admin API).
	WebhookAllowPrivate bool
	// TuneGC sets the Go garbage collector for a server under load (GOGC
	// 200 under a soft memory limit sized to the live state: memory.go).
	// The command sets it unless the operator set GOGC or GOMEMLIMIT; it
	// changes the whole process's runtime, so tests leave it off.
	TuneGC bool
	// AgentPollWait is the longest an agent's long-poll is held (default 25 s).
	AgentPollWait time.Duration
	// EnrollTokenTTL is how long an enrollment token stays valid (default 24 h).
	EnrollTokenTTL time.Duration
	// BodyTimeout is the longest a request body may take to arrive, however
	// its bytes are spaced (default 30 s). Requests without a body, such as
	// long-polls, are not bounded by it.
	BodyTimeout time.Duration
	// MaxConnsPerAddress caps the connections open at once from one client
	// address (an IPv4 address or an IPv6 /64; default 64; negative: no
	// cap) that have not carried a valid credential; at the cap the oldest
	// of them is closed (connLimiter). Trusted proxies are exempt.
	MaxConnsPerAddress int
	// MaxTunnelsPerPrincipal caps the bastion tunnels one principal holds
	// open at once through this server (default
	// api.DefaultMaxSessionsPerPrincipal); more get 429.
	MaxTunnelsPerPrincipal int
	// RecordingRetention is how long session recordings are kept (default
	// DefaultRecordingRetention); older ones are deleted, audited.
	RecordingRetention time.Duration
	// PruneInterval is how often expired tokens and sessions and finished
	// webhook deliveries are deleted (default 1 h).
	PruneInterval time.Duration
	// BruteForceThreshold is how many blocked attempts from one source on
	// one target within an hour raise an attack.suspected event (default
	// store.DefaultBruteForceThreshold; negative: never).
	BruteForceThreshold int
	// ReplicaID names this server among the replicas sharing its database:
	// it is the holder of the singleton leases it takes (logs, metric
	// jitgate_singleton_lease_held). Default: the replica id kept in the
	// data directory (ReplicaIDFile).
	ReplicaID string
	// ReplicaSecretFile holds the secret shared by the replicas of one
	// deployment (one database); with it, a bastion stream reaching this
	// replica for an agent connected to another is forwarded there, and
	// streams forwarded by the others are accepted (internal/replica).
	ReplicaSecretFile string
	// ReplicaAddress is the base URL the other replicas reach this one at
	// (default: the listening address, when it names a host).
	ReplicaAddress string
	// ReplicaCAFile is a PEM CA bundle to trust for the other replicas'
	// TLS (default: the system's).
	ReplicaCAFile string
	// SSHCAKeyFile is the SSH certificate authority's private key (default
	// DATA_DIR/ssh_ca_ed25519, made at the first start). Replicas must
	// share one key: the first server on a database records its public key
	// there, and a server whose key differs refuses to start.
	SSHCAKeyFile string
	// SSHCARotate records this server's SSH CA key in the database as the
	// one every replica must use, replacing the key recorded before
	// (audited ssh.ca_replaced): the step that makes a rotation take.
	SSHCARotate bool
	// OIDC configures single sign-on; an empty Issuer turns it off.
	OIDC oidc.Config
	// Contact is whom people signed in without a role should ask, shown on
	// their console page with the admins: an e-mail address, an http(s)
	// URL or a line of text (web.ParseContact).
	Contact string
	// Logger receives structured logs (default: text to stderr).
	Logger *slog.Logger
	// Ready, if set, is called with the address actually listened on.
	Ready func(addr string)
}

// Defaults of the resource bounds (the server flags say the same).
const (
	DefaultBodyTimeout        = 30 * time.Second
	DefaultMaxConnsPerAddress = 64
)

// withDefaults fills zero fields.
// DefaultRecordingRetention is how long recordings are kept by default.
const DefaultRecordingRetention = 90 * 24 * time.Hour

func (c Config) withDefaults() Config {
	if c.Limits == (policy.Limits{}) {
		c.Limits = policy.DefaultLimits()
	}
	if c.ActivationTimeout == 0 {
		c.ActivationTimeout = 30 * time.Second
	}
	if c.ApprovalTimeout == 0 {
		c.ApprovalTimeout = time.Hour
	}
	if c.AgentPollWait == 0 {
		c.AgentPollWait = 25 * time.Second
	}
	if c.ExpiryWarning == 0 {
		c.ExpiryWarning = store.DefaultExpiryWarning
	}
	if c.BreakGlassMax == 0 {
		c.BreakGlassMax = time.Hour
	}
	if c.WebhookTimeout == 0 {
		c.WebhookTimeout = 10 * time.Second
	}
	if c.EnrollTokenTTL == 0 {
		c.EnrollTokenTTL = 24 * time.Hour
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.RecordingRetention == 0 {
		c.RecordingRetention = DefaultRecordingRetention
	}
	if c.MaxConnsPerAddress == 0 {
		c.MaxConnsPerAddress = DefaultMaxConnsPerAddress
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = time.Hour
	}
	if c.BruteForceThreshold == 0 {
		c.BruteForceThreshold = store.DefaultBruteForceThreshold
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
		if c.TLSCert != "" {
			c.Listen = "127.0.0.1:8443"
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// storeConfig is what the store is opened with: a negative brute-force
// threshold and expiry warning mean none.
func (c Config) storeConfig() store.Config {
	return store.Config{ApprovalTimeout: c.ApprovalTimeout, ExpiryWarning: max(c.ExpiryWarning, 0), BruteForceThreshold: max(c.BruteForceThreshold, 0),
		GatherDelay: c.WriteGatherDelay, InlineSync: c.WriteInlineSync}
}

// Validate checks the configuration and names the bad field.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data-dir: required")
	}
	if c.Database != "" && !store.IsPostgresURL(c.Database) {
		return errors.New("database: not a postgres:// or postgresql:// URL (leave it out for SQLite in data-dir)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls-cert and tls-key: give both or neither")
	}
	if c.ActivationTimeout < time.Second {
		return fmt.Errorf("activation-timeout: %s is shorter than 1s", c.ActivationTimeout)
	}
	if c.ApprovalTimeout < time.Second {
		return fmt.Errorf("approval-timeout: %s is shorter than 1s", c.ApprovalTimeout)
	}
	if c.WriteGatherDelay < 0 || c.WriteGatherDelay > store.MaxGatherDelay {
		return fmt.Errorf("write-gather-delay: %s must lie between 0 (never) and %s", c.WriteGatherDelay, store.MaxGatherDelay)
	}
	if c.BreakGlassMax < time.Minute || c.BreakGlassMax > 24*time.Hour {
		return fmt.Errorf("breakglass-max: %s must lie between 1m and 24h", c.BreakGlassMax)
	}
	if c.WebhookTimeout < time.Second || c.WebhookTimeout > time.Minute {
		return fmt.Errorf("webhook-timeout: %s must lie between 1s and 1m", c.WebhookTimeout)
	}
	if c.AgentPollWait < time.Second || c.AgentPollWait > 50*time.Second {
		return fmt.Errorf("agent-poll-wait: %s must lie between 1s and 50s", c.AgentPollWait)
	}
	if c.RecordingRetention < time.Minute {
		return fmt.Errorf("recording-retention: %s is shorter than 1m", c.RecordingRetention)
	}
	if c.BodyTimeout < 0 || c.BodyTimeout > 10*time.Minute {
		return fmt.Errorf("body-timeout: %s must lie between 0s and 10m", c.BodyTimeout)
	}
	if len(c.ReplicaID) > 128 {
		return fmt.Errorf("replica-id: %d characters; at most 128", len(c.ReplicaID))
	}
	if c.ReplicaSecretFile == "" && (c.ReplicaAddress != "" || c.ReplicaCAFile != "") {
		return errors.New("replica-address and replica-ca-file: need replica-secret-file")
	}
	if c.ReplicaAddress != "" {
		u, err := url.Parse(c.ReplicaAddress)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("replica-address: %q must be an http:// or https:// URL without a path", c.ReplicaAddress)
		}
	}
	if c.OIDC.Issuer != "" || c.OIDC.ClientID != "" {
		if err := c.OIDC.Validate(); err != nil {
			return err
		}
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if _, err := web.ParseContact(c.Contact); err != nil {
		return err
	}
	return nil
}

// Check reports whether Run would start with cfg as far as can be told
// without opening the database or listening (jitgate server
// --check-config): the settings are valid and the TLS certificate and key
// load.
func Check(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if _, err := loadKeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return err
		}
	}
	return nil
}
