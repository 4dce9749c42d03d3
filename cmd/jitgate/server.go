package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/store"
)

// logFlags are the logging flags of the long-running commands.
type logFlags struct {
	format, level string
}

func (l *logFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.format, "log-format", "text", "log format: text or json")
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

// logger builds the logger the flags describe, writing to w.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usagef("--log-level %q: must be debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: must be text or json", l.format)
}

func (a *app) newServerCmd() *cobra.Command {
	var (
		cfg            server.Config
		trustedProxies []string
		maxDuration    time.Duration
		prefix4        int
		prefix6        int
		livePerUser    int
		livePerTarget  int
		logs           logFlags
		bruteForce     int
		configFile     string
		checkConfig    bool
	)
	cmd := &cobra.Command{
		Use:   "server --data-dir DIR [--listen ADDR] [--tls-cert FILE --tls-key FILE]",
		Short: "Run the jitgate server",
		Long: `Run the jitgate server: the REST API for people and agents, and the sweeper that
ends what time ends. On first start it writes an admin token to DIR/admin.token.

Every flag may also come from the environment (JITGATE_ and the flag's name in
upper case with underscores: --data-dir is JITGATE_DATA_DIR) or from a YAML
configuration file (--config, default /etc/jitgate/server.yaml when it exists)
whose keys are the flags' names:

  data-dir: /var/lib/jitgate
  listen: 0.0.0.0:8443
  tls-cert: /etc/jitgate/tls.crt
  tls-key: /etc/jitgate/tls.key
  trusted-proxy: [10.0.0.0/8]

A flag wins over the environment, which wins over the file. Unknown keys are
refused with their line. --check-config checks the settings and exits.

Unless GOGC or GOMEMLIMIT is set, the server lets the Go heap grow to three times
what is live before it collects (GOGC=200: a collection scans every waiting
long-poll's stack), under a soft memory limit of 768 MiB or twice what is live,
whichever is larger, and never above nine tenths of the memory its control
group (container, systemd unit) allows.

SIGINT or SIGTERM stop it.`,
		Example: `  jitgate server --data-dir /var/lib/jitgate --listen 0.0.0.0:8443 \
    --tls-cert /etc/jitgate/tls.crt --tls-key /etc/jitgate/tls.key`,
		Args: noArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "", "address to listen on (default 127.0.0.1:8443 with TLS, 127.0.0.1:8080 without)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the database and the first admin token (required)")
	f.StringVar(&cfg.Database, "database", "", "PostgreSQL URL, postgres://USER@HOST/DB?sslmode=verify-full, to keep the state there instead of the SQLite file in --data-dir; replicas share one (default $JITGATE_DATABASE; see docs/operations.md)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate file; with --tls-key, serve HTTPS")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key file of --tls-cert")
	f.StringSliceVar(&trustedProxies, "trusted-proxy", nil, "CIDR of a reverse proxy whose X-Forwarded-For is believed for \"my-ip\" (repeatable)")
	f.Var(newDuration(&cfg.ActivationTimeout, 30*time.Second), "activation-timeout", "how long a request waits for its agent to open the port before it fails")
	f.Var(newDuration(&cfg.ApprovalTimeout, time.Hour), "approval-timeout", "how long a request awaits its approvers before it expires")
	f.Var(newDuration(&cfg.ExpiryWarning, store.DefaultExpiryWarning), "expiry-warning", "how long before its end an active request is announced as expiring (webhook event request.expiring)")
	f.Var(newDuration(&cfg.BreakGlassMax, time.Hour), "breakglass-max", "the longest an online break-glass may open a port (1m to 24h); the rule's own maximum applies too")
	f.Var(newWaitDuration(&cfg.WriteGatherDelay, 0), "write-gather-delay", "under load, how long the database writer holds a batch for more writes (0: never, the default; at most 10ms; may pay where commits cost more than their statements, e.g. PostgreSQL over a network)")
	f.BoolVar(&cfg.WriteInlineSync, "write-inline-sync", false, "SQLite: the database writer fsyncs inside each commit instead of beside it while it runs the next (pipelined, the default; either way nothing is reported before it is on disk)")
	f.Var(newDuration(&cfg.WebhookTimeout, 10*time.Second), "webhook-timeout", "how long one webhook delivery attempt may take (1s to 1m)")
	f.BoolVar(&cfg.WebhookAllowPrivate, "webhook-allow-private", false, "let webhooks reach loopback, link-local and private addresses (refused by default, also when a name resolves to one)")
	f.IntVar(&bruteForce, "brute-force-threshold", store.DefaultBruteForceThreshold, "blocked attempts from one source on one target within an hour that raise an attack.suspected event (0: never)")
	f.Var(newDuration(&maxDuration, policy.DefaultLimits().MaxRuleDuration), "max-duration", "the longest max duration any policy rule may set")
	f.IntVar(&prefix4, "per-request-prefix-v4", policy.DefaultLimits().PerRequestBits4, "shortest IPv4 prefix a requester may name on a rule without allowed sources")
	f.IntVar(&prefix6, "per-request-prefix-v6", policy.DefaultLimits().PerRequestBits6, "shortest IPv6 prefix a requester may name on a rule without allowed sources")
	f.IntVar(&livePerUser, policy.LimitLivePerRequester, policy.DefaultLimits().MaxLivePerRequester, "most live (pending or active) requests one requester may hold on one target; more are refused with 429")
	f.IntVar(&livePerTarget, policy.LimitLivePerTarget, policy.DefaultLimits().MaxLivePerTarget, "most live (pending or active) requests of all requesters on one target; more are refused with 429")
	f.Var(newDuration(&cfg.BodyTimeout, server.DefaultBodyTimeout), "body-timeout", "longest a request body may take to arrive, however slowly it is sent (long-polls have no body and are not cut)")
	f.IntVar(&cfg.MaxConnsPerAddress, "max-conns-per-address", server.DefaultMaxConnsPerAddress, "most connections open at once from one client address (IPv6: one /64) that have not authenticated (authenticated ones: 16 times as many); at the cap the oldest unauthenticated connection is closed; --trusted-proxy peers are exempt; negative: no cap")
	f.Var(newDuration(&cfg.RecordingRetention, server.DefaultRecordingRetention), "recording-retention", "how long recordings of recorded sessions are kept (DATA_DIR/recordings); older ones are deleted, audited as recording.deleted (at least 1m)")
	f.IntVar(&cfg.MaxTunnelsPerPrincipal, "max-tunnels-per-principal", api.DefaultMaxSessionsPerPrincipal, "most bastion tunnels, terminals and session watches one person or service holds open at once; more are refused with 429")
	f.StringVar(&cfg.ReplicaSecretFile, "replica-secret-file", "", "file holding the secret shared by the replicas of one deployment (one database), 0600, at least 32 bytes; with it, bastion streams reach an agent connected to another replica (see docs/operations.md)")
	f.StringVar(&cfg.ReplicaAddress, "replica-address", "", "base URL the other replicas reach this one at, e.g. https://10.0.0.5:8443 (default: the --listen address when it names a host)")
	f.StringVar(&cfg.ReplicaCAFile, "replica-ca-file", "", "PEM CA bundle to trust for the other replicas' TLS (default: the system's)")
	f.StringVar(&cfg.SSHCAKeyFile, "ssh-ca-key-file", "", "the SSH certificate authority's private key, 0600 (default DATA_DIR/ssh_ca_ed25519, made at the first start); every replica of one database must use the same key: a server whose key differs from the one the database records refuses to start")
	f.BoolVar(&cfg.SSHCARotate, "ssh-ca-rotate", false, "record this server's SSH CA key in the database as the one every replica must use, replacing the recorded one (a key rotation; audited as ssh.ca_replaced; see docs/operations.md)")
	f.StringVar(&cfg.ReplicaID, "replica-id", "", "this server's name among the replicas sharing its database, as the holder of singleton leases, in logs and in the metric jitgate_singleton_lease_held (default: the id kept in DATA_DIR/replica.id)")
	f.StringVar(&cfg.OIDC.Issuer, "oidc-issuer", "", "OpenID Connect issuer URL for single sign-on (off when empty; see docs/sso.md)")
	f.StringVar(&cfg.OIDC.ClientID, "oidc-client-id", "", "jitgate's client id at the OpenID provider")
	f.StringVar(&cfg.OIDC.ClientSecret, "oidc-client-secret", "", "client secret (default $JITGATE_OIDC_CLIENT_SECRET; empty for a public client)")
	f.StringVar(&cfg.OIDC.RedirectURL, "oidc-redirect-url", "", "registered callback URL, https://HOST/auth/callback (default: derived from each request)")
	f.StringSliceVar(&cfg.OIDC.Scopes, "oidc-scopes", nil, "scopes to request (default openid,profile,email; add groups for Keycloak or Dex)")
	f.StringVar(&cfg.OIDC.UsernameClaim, "oidc-username-claim", "", "ID token claim holding the user name (default: email, else preferred_username, else sub)")
	f.StringVar(&cfg.OIDC.GroupsClaim, "oidc-groups-claim", "groups", "ID token claim listing the user's groups")
	f.Var(newDuration(&cfg.OIDC.SessionTTL, 12*time.Hour), "session-ttl", "life of the session a single sign-on login creates")
	f.StringVar(&cfg.Contact, "contact", "", "whom people signed in without a role should ask, shown on their console page with the admins: an e-mail address, an http(s):// URL or a line of text (at most 200 characters)")
	logs.add(cmd)
	f.StringVar(&configFile, "config", "", "YAML file of settings named like these flags (default $JITGATE_CONFIG, else "+DefaultServerConfig+" when it exists)")
	f.BoolVar(&checkConfig, "check-config", false, "check the settings (flags, environment, file, TLS files) and exit: 0 when the server would start with them")

	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		file, from, err := a.applyServerSettings(cmd, configFile)
		if err != nil {
			return err
		}
		if cfg.DataDir == "" {
			return usagef("--data-dir is required (or JITGATE_DATA_DIR, or data-dir: in the configuration file)")
		}
		log, err := logs.logger(a.stderr)
		if err != nil {
			return err
		}
		for _, s := range trustedProxies {
			p, err := policy.ParsePrefix(s)
			if err != nil {
				return usagef("--trusted-proxy %q: not an address or CIDR prefix", s)
			}
			cfg.TrustedProxies = append(cfg.TrustedProxies, p)
		}
		cfg.Limits = serverLimits(maxDuration, prefix4, prefix6)
		cfg.Limits.MaxLivePerRequester, cfg.Limits.MaxLivePerTarget = livePerUser, livePerTarget
		if cfg.MaxTunnelsPerPrincipal < 1 {
			return usagef("--max-tunnels-per-principal %d: must be 1 or more", cfg.MaxTunnelsPerPrincipal)
		}
		switch {
		case bruteForce < 0:
			return usagef("--brute-force-threshold %d: must be 0 (never) or more", bruteForce)
		case bruteForce == 0:
			cfg.BruteForceThreshold = -1 // Config's zero means the default
		default:
			cfg.BruteForceThreshold = bruteForce
		}
		cfg.Logger = log
		// The server tunes the garbage collector for its load unless the
		// operator did.
		cfg.TuneGC = a.env("GOGC") == "" && a.env("GOMEMLIMIT") == ""
		if cfg.OIDC.ClientSecret == "" {
			cfg.OIDC.ClientSecret = a.env("JITGATE_OIDC_CLIENT_SECRET")
		}
		// From the environment, a password in the URL stays out of the
		// process list.
		if cfg.Database == "" {
			cfg.Database = a.env("JITGATE_DATABASE")
		}
		if cfg.Database != "" && !store.IsPostgresURL(cfg.Database) {
			return usagef("--database: not a postgres:// or postgresql:// URL (leave it out for SQLite in --data-dir)")
		}
		if checkConfig {
			if err := server.Check(cfg); err != nil {
				return err
			}
			a.printSettingsOK(file, from)
			return nil
		}
		if err := server.Run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
	return cmd
}

// serverLimits applies the flags to the default limits. A maximum below the
// default rule duration lowers the default with it.
func serverLimits(maxDuration time.Duration, prefix4, prefix6 int) policy.Limits {
	l := policy.DefaultLimits()
	l.MaxRuleDuration = maxDuration
	l.DefaultRuleDuration = min(l.DefaultRuleDuration, maxDuration)
	l.PerRequestBits4, l.PerRequestBits6 = prefix4, prefix6
	return l
}

// printSettingsOK is the answer of --check-config: where each setting that
// is not at its default came from.
func (a *app) printSettingsOK(file string, from map[string]string) {
	if file == "" {
		file = "none"
	}
	if a.jsonOut() {
		_ = a.printJSON(struct {
			OK       bool              `json:"ok"`
			File     string            `json:"file"`
			Settings map[string]string `json:"settings"`
		}{true, file, from})
		return
	}
	fmt.Fprintf(a.stdout, "configuration OK (file: %s)\n", file)
	names := make([]string, 0, len(from))
	for n := range from {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(a.stdout, "  %-28s from %s\n", n, from[n])
	}
}
