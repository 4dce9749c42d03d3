package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/replica"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/smallfile"
	"github.com/jitgate/jitgate/internal/store"
)

// ReplicaIDFile is the name, in the data directory, of the file holding
// this server's replica id: stable across restarts, so that a server that
// starts again ends the bastion sessions its previous run left live, and
// only those (other replicas' stay).
const ReplicaIDFile = "replica.id"

const (
	// replicaBeat is how often a replica refreshes its row.
	replicaBeat = 5 * time.Second
	// replicaTTL is how long a row stays live without being refreshed:
	// then the replica is taken for dead (its relay routes are no longer
	// used, its sessions are ended as server_lost). It bounds the clock
	// skew between replicas that is tolerated, less replicaBeat.
	replicaTTL = 20 * time.Second
)

// loadReplicaID reads the data directory's replica id, creating it on
// first start.
func loadReplicaID(dir string) (string, error) {
	path := filepath.Join(dir, ReplicaIDFile)
	b, err := smallfile.Read(path, 256)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading the replica id: %w", err)
	}
	id := random.ID("rp-", 8)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the replica id: %w", err)
	}
	return id, nil
}

// replicaDeps builds this server's place among the replicas: its id, and,
// with a replica secret, the address others forward bastion streams to
// (cfg.ReplicaAddress, else the listening address when it names a host)
// and the client that forwards to them.
func replicaDeps(cfg Config, id string, listen net.Addr, scheme string) (*api.Replica, error) {
	r := &api.Replica{ID: id}
	if cfg.ReplicaSecretFile == "" {
		return r, nil
	}
	sec, err := replica.LoadSecret(cfg.ReplicaSecretFile)
	if err != nil {
		return nil, err
	}
	r.Secret = sec
	r.Address = cfg.ReplicaAddress
	if r.Address == "" {
		host, _, _ := net.SplitHostPort(listen.String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return nil, fmt.Errorf("--replica-address is needed: this server listens on %s, which does not say where other replicas reach it", listen)
		}
		r.Address = scheme + "://" + listen.String()
	}
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, TLSHandshakeTimeout: 5 * time.Second}
	if cfg.ReplicaCAFile != "" {
		pem, err := os.ReadFile(cfg.ReplicaCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --replica-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--replica-ca-file %s holds no PEM certificate", cfg.ReplicaCAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	r.HTTP = &http.Client{Transport: tr}
	return r, nil
}

// replicaLoop keeps this replica's row live and, on every round, forgets
// the relay routes of dead replicas and ends the sessions they left live
// (server_lost), until ctx ends; then it ends this replica's own sessions
// and removes its row.
func replicaLoop(ctx context.Context, st *store.Store, r *api.Replica, log *slog.Logger) {
	t := time.NewTicker(replicaBeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if err := st.HeartbeatReplica(ctx, r.ID, r.Address, now, replicaTTL); err != nil {
			log.Error("refreshing this replica's row", "err", err)
			continue
		}
		if err := st.SweepReplicas(ctx, now); err != nil {
			log.Warn("removing the relay routes of dead replicas", "err", err)
		}
		if n, err := st.EndDeadReplicaSessions(ctx, now); err != nil {
			log.Warn("ending the sessions of dead replicas", "err", err)
		} else if n > 0 {
			log.Warn("bastion sessions of a replica that stopped answering marked ended (server lost)", "sessions", n)
		}
	}
}

// stopReplica ends this replica's own sessions and removes its row.
func stopReplica(ctx context.Context, st *store.Store, r *api.Replica, log *slog.Logger) {
	if n, err := st.EndReplicaSessions(ctx, r.ID, session.ServerLost, time.Now()); err != nil {
		log.Error("ending bastion sessions at stop", "err", err)
	} else if n > 0 {
		log.Info("bastion sessions ended: the server stopped", "sessions", n)
	}
	if err := st.RemoveReplica(ctx, r.ID); err != nil {
		log.Error("removing this replica's row at stop", "err", err)
	}
}
