package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// DefaultServerConfig is read by jitgate server when --config is not given
// and the file exists.
const DefaultServerConfig = "/etc/jitgate/server.yaml"

// notInFile are the server flags a configuration file cannot set.
var notInFile = map[string]bool{"config": true, "check-config": true, "help": true, "output": true}

// envName is the environment variable of a server flag: JITGATE_ and the
// flag's name in upper case with underscores (--data-dir: JITGATE_DATA_DIR).
func envName(flag string) string {
	return "JITGATE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyServerSettings completes the server's flags from the environment and
// the configuration file, with the precedence of the CLI's client settings:
// a flag given on the command line wins, then its environment variable
// (envName), then the file's key of the same name as the flag, then the
// default. It returns the file read ("" for none) and, for each setting not
// at its default, where it came from (for --check-config).
func (a *app) applyServerSettings(cmd *cobra.Command, configFlag string) (string, map[string]string, error) {
	fs := cmd.Flags()
	from := map[string]string{}
	explicit := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			explicit[f.Name] = true
			from[f.Name] = "flag"
		}
	})
	path, required := configFlag, true
	if path == "" {
		path, required = a.env("JITGATE_CONFIG"), true
	}
	if path == "" {
		path, required = DefaultServerConfig, false
	}
	file, err := readServerConfig(fs, path, required)
	if err != nil {
		return "", nil, err
	}
	if file == nil {
		path = ""
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if explicit[f.Name] || notInFile[f.Name] {
			return
		}
		if v := a.env(envName(f.Name)); v != "" {
			if err := setFlag(fs, f, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
			from[f.Name] = "env " + envName(f.Name)
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := setFlag(fs, f, v.value); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s: %w", path, v.line, f.Name, err))
			}
			from[f.Name] = fmt.Sprintf("%s:%d", path, v.line)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return "", nil, usagef("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return path, from, nil
}

// setFlag sets f from a string; list flags take a comma-separated list (a
// YAML list arrives joined so).
func setFlag(fs *pflag.FlagSet, f *pflag.Flag, v string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		var items []string
		if v != "" {
			items = strings.Split(v, ",")
		}
		return sv.Replace(items)
	}
	return fs.Set(f.Name, v)
}

// fileValue is one key of the configuration file.
type fileValue struct {
	value string
	line  int
}

// readServerConfig reads the YAML mapping at path: each key the name of a
// server flag, each value a scalar or a list of scalars. An unknown key, a
// key given twice or a nested value is an error naming its line (like
// yaml's KnownFields, but the keys are the flags themselves, so that the
// file cannot drift from them). A missing optional file is no error (nil).
func readServerConfig(fs *pflag.FlagSet, path string, required bool) (map[string]fileValue, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the configuration file: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]fileValue{}, nil // an empty file
		}
		return nil, usagef("%s: %v", path, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, usagef("%s:%d: want a mapping of setting: value (the names of jitgate server's flags)", path, root.Line)
	}
	out := map[string]fileValue{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		if f := fs.Lookup(name); f == nil || notInFile[name] {
			return nil, usagef("%s:%d: unknown setting %q (the settings are jitgate server's flags without dashes in front: %s)", path, k.Line, name, knownSettings(fs))
		}
		if prev, dup := out[name]; dup {
			return nil, usagef("%s:%d: %q given again (first at line %d)", path, k.Line, name, prev.line)
		}
		switch v.Kind {
		case yaml.ScalarNode:
			out[name] = fileValue{v.Value, k.Line}
		case yaml.SequenceNode:
			var items []string
			for _, it := range v.Content {
				if it.Kind != yaml.ScalarNode {
					return nil, usagef("%s:%d: %s: a list of plain values, please", path, it.Line, name)
				}
				if strings.Contains(it.Value, ",") {
					return nil, usagef("%s:%d: %s: an item may not hold a comma", path, it.Line, name)
				}
				items = append(items, it.Value)
			}
			out[name] = fileValue{strings.Join(items, ","), k.Line}
		default:
			return nil, usagef("%s:%d: %s: want a value or a list of values", path, v.Line, name)
		}
	}
	if err := checkSecretsPrivate(path, out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkSecretsPrivate refuses a configuration file that every local user
// may read when it holds a secret: the OIDC client secret, or a database
// URL with a password. Like ssh with a private key others can read, the
// server does not start on it (its users would read what signs them in or
// opens the database); the line is named, and the ways out.
func checkSecretsPrivate(path string, settings map[string]fileValue) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading the configuration file: %w", err)
	}
	if fi.Mode().Perm()&0o004 == 0 {
		return nil
	}
	for _, name := range []string{"oidc-client-secret", "database"} {
		v, ok := settings[name]
		if !ok || v.value == "" || name == "database" && !urlHasPassword(v.value) {
			continue
		}
		return usagef("%s:%d: %s is a secret, in a file every local user can read (mode %04o): chmod o-r %s (the package's is root:jitgate 0640), or set %s in the unit's environment file (/etc/default/jitgate-server, 0600)",
			path, v.line, name, fi.Mode().Perm(), path, envName(name))
	}
	return nil
}

// urlHasPassword reports whether a database URL carries a password (in its
// user information or as ?password=).
func urlHasPassword(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return strings.Contains(s, "password") // unparsable: assume it may
	}
	if _, ok := u.User.Password(); ok {
		return true
	}
	return u.Query().Has("password")
}

// knownSettings lists the settings a file may hold.
func knownSettings(fs *pflag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !notInFile[f.Name] {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	return strings.Join(names, ", ")
}
