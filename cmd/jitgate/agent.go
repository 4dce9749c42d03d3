//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/agent"
	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
)

func (a *app) newAgentCmd() *cobra.Command {
	var (
		cfg     agent.Config
		dryRun  bool
		mode    string
		logs    logFlags
		servers []string
		metrics string
	)
	cmd := &cobra.Command{
		Use:   "agent --server URL[,URL...] [--enroll-token TOKEN]",
		Short: "Run the agent on a protected host",
		Long: `Run the agent on a protected host (as root): it enrolls once with the token
'jitgate target add' printed, then keeps the nftables table inet jitgate in line
with the grants the server holds. The credential is kept in --state-dir; once
enrolled, --server and --enroll-token may be left out. A plain http:// server URL
is refused unless it is loopback or --insecure-http is given.

With several server replicas (sharing one database), give each URL (--server
repeated, or a comma-separated list): the agent uses one at a time and moves on
to the next when it stops answering (connection refused, time-outs, 502/503/504),
with backoff and jitter once none answers; its bastion relay connection follows.
Moving changes nothing in the kernel. One URL behind a load balancer works too.

The enrollment token may also come from JITGATE_ENROLL_TOKEN, which keeps it out
of the process list.

With --dry-run the agent enrolls if needed, fetches the desired state once,
prints the nftables table it would build and exits. It neither touches the
firewall nor tells the server anything was applied.

With --mode gateway the agent runs on a router in front of many targets and
enforces for all of them in the forward path (and publishes DNAT mappings to
granted sources only); the server must describe the target as a gateway.

Without the privilege to program nftables (or without kernel support) the agent
keeps running: it reports that it cannot enforce, and why, and applies nothing.

One agent programs a host's table: a second agent in the same network
namespace (whatever its --state-dir) refuses to start and names the first
(lock in /run/jitgate).

The agent remembers in --state-dir the highest revision it applied. A server
that sends a lower one (its database was restored from an older copy) is not
obeyed: the agent removes every grant (protected ports stay closed) and tells
the server, which ends that target's grants and moves past the revision.

From 10,000 grants on, the agent sets the Go runtime's soft memory limit from the
number of grants it holds (64 MiB plus 450 bytes a grant, twice that in gateway
mode), so that its memory stays near what it needs; GOMEMLIMIT, when set, wins.

SIGINT or SIGTERM stop it; the kernel keeps closing grants on time without it.`,
		Example: `  jitgate agent --server https://jit.example.com --enroll-token jge_...`,
		Args:    noArgs,
	}
	f := cmd.Flags()
	f.StringSliceVar(&servers, "server", nil, "server URL; repeat it or separate URLs with commas for several replicas (remembered in the state directory after enrollment)")
	f.StringVar(&cfg.EnrollToken, "enroll-token", "", "one-time enrollment token from 'jitgate target add' (default $JITGATE_ENROLL_TOKEN)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/jitgate-agent", "directory holding the agent credential")
	f.StringVar(&cfg.CAFile, "ca-file", "", "PEM CA bundle to trust for the server's TLS")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "allow a plain http:// server URL that is not loopback (the credential then crosses the network in cleartext)")
	f.BoolVar(&dryRun, "dry-run", false, "print the nftables table the agent would build, once, and exit without applying it")
	f.StringVar(&mode, "mode", "host", "what to protect: host (this host's own ports) or gateway (the destinations behind this router)")
	f.Var(newDuration(&cfg.ResyncEvery, agent.DefaultResyncEvery), "resync", "period of the full re-apply and of the report with counters and inventory")
	f.StringVar(&cfg.SSHTrustedCA, "ssh-trusted-ca", "", "keep this file holding the server's SSH certificate authority key; name it in sshd_config as TrustedUserCAKeys (opt-in: jitgate's certificates log in only where sshd trusts it)")
	f.StringVar(&cfg.SSHHostKeys, "ssh-host-keys", agent.DefaultSSHHostKeys, "glob of this host's SSH host public key files, reported so that jitgate ssh accepts only these keys (\"none\": report none)")
	f.StringVar(&metrics, "metrics-address", "", "serve this agent's Prometheus metrics at http://ADDR/metrics, without a token (off by default; e.g. 127.0.0.1:9469, or a management address a firewall keeps to the scraper)")
	logs.add(cmd)

	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		log, err := logs.logger(a.stderr)
		if err != nil {
			return err
		}
		cfg.ServerURL = strings.Join(servers, ",")
		if cfg.EnrollToken == "" {
			cfg.EnrollToken = a.env("JITGATE_ENROLL_TOKEN")
		}
		cfg.Version = versionInfo().Version
		cfg.Logger = log
		// The agent sizes the runtime's soft memory limit to its state
		// unless the operator set one.
		cfg.SizeMemory = a.env("GOMEMLIMIT") == ""
		if metrics != "" {
			stop, err := serveAgentMetrics(ctx, metrics, &cfg, log)
			if err != nil {
				return err
			}
			defer stop()
		}
		if cfg.Mode, err = firewall.ParseMode(mode); err != nil {
			return fmt.Errorf("--mode: %w", err)
		}
		if dryRun {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			b := &printBackend{w: a.stdout, json: a.jsonOut(), done: cancel}
			if err := agent.Run(ctx, cfg, b); err != nil {
				return err
			}
			if !b.printed {
				return errors.New("stopped before the server sent the desired state")
			}
			return nil
		}
		// One agent per host's table: a second one refuses, naming the first.
		// An agent that cannot even take the lock (no privilege to write
		// /run) cannot program nftables either: it runs on and reports that.
		switch lock, err := agent.LockHost(agent.DefaultLockDir, cfg.StateDir); {
		case errors.Is(err, agent.ErrHostLocked):
			return err
		case err != nil:
			log.Warn("cannot take the host lock; not guarding against a second agent", "err", err)
		default:
			defer func() { _ = lock.Release() }()
			cfg.Table = lock
		}
		var backend firewall.Backend
		// The state file lets a restarted agent trust the table without
		// listing it, which costs minutes at a million grants.
		if b, err := nft.New(nft.WithStateFile(filepath.Join(cfg.StateDir, "nft-state"))); err != nil {
			// Keep running: the agent reports that it cannot enforce.
			log.Error("cannot open nftables; the agent will report that it cannot enforce", "err", err)
			backend = unavailableBackend{err: fmt.Errorf("opening nftables (the agent needs root or CAP_NET_ADMIN): %w", err)}
		} else {
			backend = b
		}
		defer backend.Close()
		if s, err := nft.NewSampler(); err != nil {
			log.Warn("not sampling the sources of blocked attempts", "err", err)
		} else {
			defer s.Close()
			cfg.Sampler = s
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			go func() {
				if err := s.Run(sctx); err != nil {
					log.Warn("sampling blocked attempts stopped", "err", err)
				}
			}()
		}
		return agent.Run(ctx, cfg, backend)
	})
	cmd.AddCommand(a.newAgentBreakGlassCmd())
	return cmd
}

// serveAgentMetrics starts the agent's /metrics listener on addr and sets
// cfg.Metrics; stop closes it.
func serveAgentMetrics(ctx context.Context, addr string, cfg *agent.Config, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = agent.NewMetrics(reg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with ErrServerClosed on stop
	log.Info("agent metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { srv.Close() }, nil
}

// unavailableBackend stands in when nftables cannot even be opened: every
// call fails with why, and the agent reports it.
type unavailableBackend struct{ err error }

func (u unavailableBackend) Apply(context.Context, firewall.Ruleset, time.Time) (firewall.ApplyResult, error) {
	return firewall.ApplyResult{}, u.err
}

func (u unavailableBackend) State(context.Context, time.Time) (firewall.State, error) {
	return firewall.State{}, u.err
}

func (u unavailableBackend) Probe(context.Context) error { return u.err }

func (u unavailableBackend) Close() error { return nil }

// printBackend is the backend of --dry-run: its first Apply prints the
// table nft would build and ends the run, so the agent never reports the
// state as applied (its report would go out on a cancelled context).
type printBackend struct {
	w       io.Writer
	json    bool
	done    context.CancelFunc
	mu      sync.Mutex
	printed bool
}

var _ firewall.Backend = (*printBackend)(nil)

func (b *printBackend) Apply(_ context.Context, rs firewall.Ruleset, now time.Time) (firewall.ApplyResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.printed {
		b.printed = true
		text := nft.Render(rs, now)
		if b.json {
			_ = printJSONTo(b.w, struct {
				Ruleset string `json:"ruleset"`
			}{text})
		} else {
			fmt.Fprint(b.w, text)
		}
	}
	b.done()
	return firewall.ApplyResult{}, nil
}

func (b *printBackend) State(context.Context, time.Time) (firewall.State, error) {
	return firewall.State{}, errors.New("dry run: no kernel state")
}

func (b *printBackend) Close() error { return nil }
