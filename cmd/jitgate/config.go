package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/jitgate/jitgate/internal/client"
)

// connFlags are the flags of every client command.
type connFlags struct {
	server, token, caFile string
}

// addConnFlags registers --server, --token and --ca-file on cmd and its
// subcommands.
func (a *app) addConnFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&a.conn.server, "server", "", "server URL, or several replicas' URLs separated by commas: a read is retried on the next when one does not answer, a write only when it never reached the server (default $JITGATE_SERVER, else the config file)")
	f.StringVar(&a.conn.token, "token", "", "API token (default $JITGATE_TOKEN, else the config file)")
	f.StringVar(&a.conn.caFile, "ca-file", "", "PEM CA bundle to trust for the server's TLS (default $JITGATE_CA_FILE, else the config file)")
}

// fileConfig is the client configuration file.
type fileConfig struct {
	Server string `yaml:"server"`
	Token  string `yaml:"token,omitempty"`
	CAFile string `yaml:"ca_file,omitempty"`
	// TokenID and TokenExpires describe a session token saved by
	// `jitgate login`.
	TokenID      string     `yaml:"token_id,omitempty"`
	TokenExpires *time.Time `yaml:"token_expires,omitempty"`
}

// configPath returns where the configuration file lives, or "" when
// neither XDG_CONFIG_HOME nor HOME is set.
func (a *app) configPath() string {
	if dir := a.env("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "jitgate", "config.yaml")
	}
	if home := a.env("HOME"); home != "" {
		return filepath.Join(home, ".config", "jitgate", "config.yaml")
	}
	return ""
}

// loadConfig reads the configuration file; a missing file is an empty one.
func (a *app) loadConfig(path string) (fileConfig, error) {
	var cfg fileConfig
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("reading config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			msg = te.Errors[0]
			if i := strings.Index(msg, " not found in type"); i >= 0 {
				msg = msg[:i] + " is unknown (known: server, token, ca_file, token_id, token_expires)"
			}
		}
		return cfg, fmt.Errorf("config file %s: %s", path, strings.TrimPrefix(msg, "yaml: "))
	}
	return cfg, nil
}

// saveConfig writes the configuration file with mode 0600 (it holds a
// token), atomically: a crash leaves the old file or the new one.
func saveConfig(path string, cfg fileConfig) error {
	if path == "" {
		return errors.New("no config file location: set HOME or XDG_CONFIG_HOME")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating config directory: %w", err)
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encoding config file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("writing config file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing config file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing config file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing config file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing config file: %w", err)
	}
	return nil
}

// connection is where and how a client command talks to the server.
type connection struct {
	server, token, caFile string
	// configPath is the file consulted, for messages.
	configPath string
}

// resolve picks each setting from the flag, else the environment, else the
// configuration file.
func (a *app) resolve() (connection, error) {
	c := connection{server: a.conn.server, token: a.conn.token, caFile: a.conn.caFile, configPath: a.configPath()}
	pick := func(dst *string, env string) {
		if *dst == "" {
			*dst = a.env(env)
		}
	}
	pick(&c.server, "JITGATE_SERVER")
	pick(&c.token, "JITGATE_TOKEN")
	pick(&c.caFile, "JITGATE_CA_FILE")
	if c.server == "" || c.token == "" || c.caFile == "" {
		cfg, err := a.loadConfig(c.configPath)
		if err != nil {
			return c, err
		}
		if c.server == "" {
			c.server = cfg.Server
		}
		if c.token == "" {
			c.token = cfg.Token
			if cfg.Token != "" && cfg.TokenExpires != nil && !a.now().Before(*cfg.TokenExpires) {
				return c, fmt.Errorf("the session saved in %s expired at %s: run jitgate login", c.configPath, cfg.TokenExpires.Local().Format(time.DateTime))
			}
		}
		if c.caFile == "" {
			c.caFile = cfg.CAFile
		}
	}
	where := "the config file"
	if c.configPath != "" {
		where = c.configPath
	}
	if c.server == "" {
		return c, fmt.Errorf("no server given: use --server, JITGATE_SERVER or \"server:\" in %s", where)
	}
	if c.token == "" {
		return c, fmt.Errorf("no token given: use --token, JITGATE_TOKEN or \"token:\" in %s", where)
	}
	if c.caFile != "" && strings.HasPrefix(c.caFile, "~/") {
		if home := a.env("HOME"); home != "" {
			c.caFile = filepath.Join(home, c.caFile[2:])
		}
	}
	return c, nil
}

// client returns an API client for the resolved connection.
func (a *app) client() (*client.Client, connection, error) {
	conn, err := a.resolve()
	if err != nil {
		return nil, conn, err
	}
	var opts []client.Option
	if conn.caFile != "" {
		opts = append(opts, client.WithCAFile(conn.caFile))
	}
	c, err := client.New(conn.server, conn.token, opts...)
	return c, conn, err
}
