package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/wire"
)

// newSSHCertCmd signs the user's own public key with the server's SSH CA,
// for clients other than jitgate ssh (which does this with an ephemeral key).
func (a *app) newSSHCertCmd() *cobra.Command {
	var (
		keyFile, login, portFlag string
	)
	cmd := &cobra.Command{
		Use:   "ssh-certificate REQUEST_ID --key FILE.pub [--login USER] [--port P]",
		Short: "Get an SSH certificate for your own key on a live grant",
		Long: `Ask the server's SSH certificate authority to sign your public key for a live
grant of your own request, on an SSH port whose rule names logins. The
certificate is valid for that one login until the grant's deadline; it is
written beside the key as FILE-cert.pub (ssh picks it up with -i FILE). The
target's sshd must trust the CA (jitgate agent --ssh-trusted-ca).`,
		Example: `  jitgate ssh-certificate 01J... --key ~/.ssh/id_ed25519.pub --login deploy`,
		Args:    oneArg("REQUEST_ID"),
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "your public key file, such as ~/.ssh/id_ed25519.pub (required)")
	cmd.Flags().StringVar(&login, "login", "", "user name on the target (default: the rule's first login)")
	cmd.Flags().StringVarP(&portFlag, "port", "p", "22", "the request's SSH port")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if keyFile == "" {
			return usagef("--key is required")
		}
		port, err := parseTunnelPort(portFlag)
		if err != nil {
			return err
		}
		pub, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("reading the public key: %w", err)
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		cert, err := c.SSHCertificate(ctx, args[0], wire.SSHCertificateRequest{PublicKey: strings.TrimSpace(string(pub)), Login: login, Port: port})
		if err != nil {
			return err
		}
		out := strings.TrimSuffix(keyFile, ".pub") + "-cert.pub"
		if err := os.WriteFile(out, []byte(cert.Certificate+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing the certificate: %w", err)
		}
		if a.jsonOut() {
			return a.printJSON(cert)
		}
		fmt.Fprintf(a.stdout, "wrote %s: login %s, key id %s, valid until %s\n", out, strings.Join(cert.Principals, ","), cert.KeyID,
			cert.ValidBefore.Local().Format("2006-01-02 15:04:05"))
		return nil
	})
	return cmd
}

// newSSHCACmd prints the CA's public key, for a target's sshd.
func (a *app) newSSHCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh-ca",
		Short: "Print the server's SSH certificate authority key (for sshd's TrustedUserCAKeys)",
		Long: `Print the public key of the server's SSH certificate authority. A target's sshd
that names a file holding it in TrustedUserCAKeys lets jitgate's certificates
log in (jitgate agent --ssh-trusted-ca FILE keeps such a file current).`,
		Example: `  jitgate ssh-ca > /etc/ssh/jitgate_user_ca.pub`,
		Args:    noArgs,
	}
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		ca, err := c.SSHCA(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(ca)
		}
		fmt.Fprintln(a.stdout, ca.PublicKey)
		return nil
	})
	return cmd
}
