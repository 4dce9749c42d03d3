package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// loadKeyPair loads the PEM certificate and key files.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	return &cert, nil
}

// certReloader serves the certificate of two files and loads them again
// when either changes (size or modification time), so that a renewed
// certificate (certbot, cert-manager, an ACME client writing the files) is
// served without a restart. The files are looked at, at most once per
// checkEvery, on a TLS handshake. A change that does not load (the key
// written before the certificate, a broken file) keeps the certificate in
// service and is logged; it is tried again at the next change.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	checkEvery        time.Duration

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp
	checkedAt time.Time
}

// fileStamp is what tells a file changed.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.Size(), fi.ModTime()}, nil
}

// newCertReloader loads the pair once: it must load at start.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, checkEvery: time.Second}
	stamp, err := r.stamps()
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.stamp, r.checkedAt = cert, stamp, time.Now()
	return r, nil
}

func (r *certReloader) stamps() ([2]fileStamp, error) {
	c, err := stampOf(r.certFile)
	if err != nil {
		return [2]fileStamp{}, err
	}
	k, err := stampOf(r.keyFile)
	if err != nil {
		return [2]fileStamp{}, err
	}
	return [2]fileStamp{c, k}, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checkedAt) < r.checkEvery {
		return r.cert, nil
	}
	r.checkedAt = now
	stamp, err := r.stamps()
	if err != nil {
		r.log.Error("TLS certificate files unreadable; serving the loaded certificate", "err", err)
		return r.cert, nil
	}
	if stamp == r.stamp {
		return r.cert, nil
	}
	cert, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Not remembered: the next look tries again (the other file of the
		// pair may still be on its way).
		r.log.Error("TLS certificate changed but does not load; serving the previous one", "err", err)
		return r.cert, nil
	}
	r.cert, r.stamp = cert, stamp
	r.log.Info("TLS certificate reloaded", "cert", r.certFile)
	return r.cert, nil
}
