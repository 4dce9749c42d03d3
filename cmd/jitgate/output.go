package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/itchyny/gojq"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"

	"github.com/jitgate/jitgate/internal/text"
)

// The output conventions (-o text|json|yaml|wide, --jq) live here, once:
// a command prints its value with a.printJSON(v) when a.jsonOut() is true
// and its text form otherwise (a.wide() adds columns to a table). Every
// structured format is rendered from v's JSON form, so yaml and --jq show
// exactly the fields and names of -o json.

// outputFormats are the values of --output.
var outputFormats = []string{"text", "json", "yaml", "wide"}

// checkOutput validates --output and compiles --jq; errors are usage errors.
func (a *app) checkOutput() error {
	switch a.output {
	case "text", "json", "yaml", "wide":
	default:
		return usagef("--output %q: must be one of %s", a.output, strings.Join(outputFormats, ", "))
	}
	a.jqCode = nil
	if a.jq == "" {
		return nil
	}
	if a.output == "wide" {
		return usagef("--jq works on -o json or -o yaml, not -o wide")
	}
	q, err := gojq.Parse(a.jq)
	if err != nil {
		return usagef("--jq %q: %v", a.jq, err)
	}
	code, err := gojq.Compile(q)
	if err != nil {
		return usagef("--jq %q: %v", a.jq, err)
	}
	a.jqCode = code
	return nil
}

// jsonOut reports whether the command prints structured data (-o json,
// -o yaml or --jq) instead of text.
func (a *app) jsonOut() bool { return a.output == "json" || a.output == "yaml" || a.jq != "" }

// wide reports whether -o wide asked for every column of a table.
func (a *app) wide() bool { return a.output == "wide" }

// printJSON writes v in the structured format asked for: indented JSON,
// YAML, or the results of --jq (strings raw, one per line, as gh does;
// other values as JSON, or as YAML with -o yaml).
func (a *app) printJSON(v any) error { return a.render(a.stdout, v) }

func (a *app) render(w io.Writer, v any) error {
	if a.jqCode == nil && a.output != "yaml" {
		return printJSONTo(w, v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	if a.jqCode == nil {
		return writeYAML(w, data)
	}
	var in any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	in = jqNumbers(in)
	ctx := a.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	// Under the run's context: the first Ctrl-C ends an expression that
	// would run for ever ('[range(1e12)] | length').
	iter := a.jqCode.RunWithContext(ctx, in)
	for {
		out, ok := iter.Next()
		if !ok {
			return nil
		}
		if err, ok := out.(error); ok {
			if herr, ok := err.(*gojq.HaltError); ok && herr.Value() == nil {
				return nil
			}
			return fmt.Errorf("--jq: %w", err)
		}
		if s, ok := out.(string); ok {
			// Raw, but one inert line: a newline kept in an old row
			// cannot forge another result.
			fmt.Fprintln(w, text.Escape(s))
			continue
		}
		if a.output == "yaml" {
			data, err := json.Marshal(out)
			if err != nil {
				return fmt.Errorf("--jq: %w", err)
			}
			if err := writeYAML(w, data); err != nil {
				return err
			}
			continue
		}
		if err := printJSONTo(w, out); err != nil {
			return err
		}
	}
}

// jqNumbers turns json.Number into the int or float64 gojq computes with
// (ids and counters stay exact integers).
func jqNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if n, err := v.Int64(); err == nil && int64(int(n)) == n {
			return int(n)
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = jqNumbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = jqNumbers(v[k])
		}
	}
	return v
}

// writeYAML writes a JSON document as block-style YAML, keeping the order
// of its keys (JSON is YAML: the node tree is read as is and restyled).
func writeYAML(w io.Writer, data []byte) error {
	// JSON leaves DEL and the C1 controls raw inside strings, where YAML
	// refuses them: write them as JSON escapes (inside strings is the only
	// place they can be).
	var b strings.Builder
	for _, r := range string(data) {
		if r >= 0x7f && r <= 0x9f {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &doc); err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	blockStyle(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	return enc.Close()
}

// blockStyle clears the flow and quoting styles JSON's syntax gave the
// nodes; the encoder quotes a string only where YAML needs it ("22",
// "true" stay strings).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// Colour: text output may colour the state of requests. It is on only
// when stdout is a terminal and NO_COLOR (https://no-color.org) is unset or
// empty; CLICOLOR_FORCE=1 turns it on for a pipe (NO_COLOR still wins).

// colorWanted decides colour from whether stdout is a terminal and the
// environment.
func colorWanted(tty bool, env func(string) string) bool {
	if env("NO_COLOR") != "" {
		return false
	}
	if f := env("CLICOLOR_FORCE"); f != "" && f != "0" {
		return true
	}
	return tty && env("TERM") != "dumb"
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminalFd(f.Fd())
}

func isTerminalFd(fd uintptr) bool { return term.IsTerminal(int(fd)) }

// color reports whether this invocation's text output is coloured.
func (a *app) color() bool {
	return !a.jsonOut() && colorWanted(isTerminal(a.rawStdout), a.env)
}

// SGR sequences for states; each whole line is wrapped, so a table's
// alignment does not change.
const (
	sgrGreen  = "\x1b[32m"
	sgrYellow = "\x1b[33m"
	sgrRed    = "\x1b[31m"
	sgrDim    = "\x1b[2m"
	sgrReset  = "\x1b[0m"
)

// stateColor is the colour of a request state: live green, waiting
// yellow, refused or failed red, ended dim.
func stateColor(state string) string {
	switch state {
	case "active":
		return sgrGreen
	case "pending", "pending_approval", "approved", "scheduled":
		return sgrYellow
	case "denied", "failed":
		return sgrRed
	case "expired", "revoked", "superseded", "ended":
		return sgrDim
	}
	return ""
}

// paintLines writes the already escaped text in buf to the terminal, line
// i wrapped in colors[i] (none when ""). The colour codes are ours, added
// after escaping: nothing from the server reaches the terminal raw.
func (a *app) paintLines(buf []byte, colors []string) error {
	lines := strings.SplitAfter(string(buf), "\n")
	var b strings.Builder
	for i, l := range lines {
		c := ""
		if i < len(colors) {
			c = colors[i]
		}
		if c == "" || l == "" {
			b.WriteString(l)
			continue
		}
		body, nl := strings.CutSuffix(l, "\n")
		b.WriteString(c + body + sgrReset)
		if nl {
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(a.rawStdout, b.String())
	return err
}
