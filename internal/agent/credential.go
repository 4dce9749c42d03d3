package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/jitgate/jitgate/internal/smallfile"
)

// credentialName is the file in StateDir holding the agent's credential.
const credentialName = "credential"

// credential is what enrollment leaves on disk: enough to talk to the server
// again after a restart without the one-time enrollment token.
type credential struct {
	ServerURL  string `json:"server_url"`
	Target     string `json:"target"`
	Credential string `json:"credential"`
}

// loadCredential reads the credential file; it returns an error wrapping
// fs.ErrNotExist when the agent has not enrolled yet.
func loadCredential(path string) (credential, error) {
	var c credential
	b, err := smallfile.Read(path, 64<<10)
	if err != nil {
		return c, fmt.Errorf("reading credential file: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		// The decoder's message may quote the file, which holds the secret.
		return c, fmt.Errorf("credential file %s is not valid JSON: delete it to enroll again", path)
	}
	if c.Credential == "" || c.ServerURL == "" {
		return c, fmt.Errorf("credential file %s lacks server_url or credential: delete it to enroll again", path)
	}
	return c, nil
}

// saveCredential writes the credential file with mode 0600 in a 0700
// directory, atomically: a crash leaves either no file (and the agent enrolls
// again) or a complete one, never a truncated credential that the one-time
// token can no longer replace.
func saveCredential(path string, c credential) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding credential: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+credentialName+"-*.tmp") // CreateTemp makes it 0600
	if err != nil {
		return fmt.Errorf("creating credential file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this finds nothing
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("restricting credential file: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("writing credential file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing credential file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing credential file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("installing credential file: %w", err)
	}
	// Sync the directory so the rename itself survives a power loss.
	if d, err := os.Open(dir); err == nil {
		syncErr := d.Sync()
		d.Close()
		if syncErr != nil {
			return fmt.Errorf("syncing state directory: %w", syncErr)
		}
	}
	return nil
}

// removeCredential deletes the credential file; a missing file is not an error.
func removeCredential(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting credential file: %w", err)
	}
	return nil
}

// hostAddresses lists the host's interface addresses that another machine
// could use to reach it: loopback and link-local addresses are left out.
func hostAddresses() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
			continue
		}
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}
