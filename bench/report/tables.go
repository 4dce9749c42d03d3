package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// obj is a decoded JSON object with lenient accessors.
type obj map[string]any

func (o obj) f(k string) float64 {
	return num(o[k])
}

// num reads a JSON number (decoded with UseNumber, so that 64-bit seeds
// stay exact).
func num(v any) float64 {
	n, _ := v.(json.Number)
	f, _ := n.Float64()
	return f
}

func (o obj) o(k string) obj {
	v, _ := o[k].(map[string]any)
	return obj(v)
}

func (o obj) fs(k string) []float64 {
	var out []float64
	vs, _ := o[k].([]any)
	for _, v := range vs {
		out = append(out, num(v))
	}
	return out
}

func (o obj) b(k string) bool {
	v, _ := o[k].(bool)
	return v
}

func load(dir, name string) (obj, bool) {
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		return nil, false
	}
	var o obj
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&o); err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	return o, true
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func dist(s obj) string {
	return fmt.Sprintf("%.2f | %.2f | %.2f | %.2f | %.2f", s.f("p50_ms"), s.f("p90_ms"), s.f("p99_ms"), s.f("max_ms"), s.f("min_ms"))
}

func spread(vs []float64) string {
	if len(vs) == 0 {
		return "–"
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	return fmt.Sprintf("median %+.1f, min %+.1f, max %+.1f (n=%d)", s[len(s)/2], s[0], s[len(s)-1], len(s))
}

// sections renders each generated section from the results; a section
// whose result is missing is not rendered.
var sections = map[string]func(dir string) (string, bool){
	"machine": func(dir string) (string, bool) {
		f, err := os.Open(filepath.Join(dir, "machine.txt"))
		if err != nil {
			return "", false
		}
		defer f.Close()
		var b strings.Builder
		b.WriteString("| | |\n|---|---|\n")
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, " ") {
				k = strings.TrimSpace(k)
				if k == "Mem" {
					fs := strings.Fields(v)
					k, v = "memory", fs[0]+" total, "+fs[len(fs)-1]+" available"
				}
				if k == "Swap" {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s |\n", k, strings.TrimSpace(v))
			}
		}
		return b.String(), true
	},
	"peers": func(dir string) (string, bool) {
		p, ok := load(dir, "peers")
		if !ok {
			return "", false
		}
		j := p.o("jitgate_open").f("p50_ms")
		var b strings.Builder
		fmt.Fprintf(&b, "Request to open port, %0.f trials each (ms):\n\n", p.f("trials"))
		b.WriteString("| system | p50 | p90 | p99 | max | min | p50 / jitgate p50 | the request alone, p50 |\n|---|---|---|---|---|---|---|---|\n")
		for _, r := range []struct{ name, key, call string }{
			{"jitgate (API call → open)", "jitgate_open", "jitgate_call"},
			{"fwknop, UDP-server mode (`-U`)", "fwknop_udp_open", "fwknop_udp_call"},
			{"fwknop, capture mode (default)", "fwknop_pcap_open", "fwknop_pcap_call"},
		} {
			s := p.o(r.key)
			fmt.Fprintf(&b, "| %s | %s | %.1f × | %.2f |\n", r.name, dist(s), s.f("p50_ms")/j, p.o(r.call).f("p50_ms"))
		}
		fmt.Fprintf(&b, "\nTarget: fwknop's default mode at least %.0f × jitgate's p50: **%.1f ×**, met: %s.\n\n",
			p.f("target_ratio"), p.f("fwknop_pcap_p50_over_jitgate_p50"), yes(p.b("met")))
		b.WriteString("Expiry precision, first refused connection minus the deadline asked for (3 s grants, ms):\n\n| system | first refusal − deadline |\n|---|---|\n")
		fmt.Fprintf(&b, "| jitgate | %s |\n| fwknop (capture mode) | %s |\n\n", spread(p.fs("jitgate_first_refusal_minus_deadline_ms")), spread(p.fs("fwknop_first_refusal_minus_deadline_ms")))
		b.WriteString("Crash: a 3 s grant, the daemon(s) killed with SIGKILL while it is open:\n\n| system | killed | port closed? |\n|---|---|---|\n")
		cs, _ := p["crashes"].([]any)
		for _, c := range cs {
			c := obj(c.(map[string]any))
			res := "**still open 6 s after the deadline**"
			if v, ok := c["closed_minus_deadline_ms"]; ok && v != nil {
				res = fmt.Sprintf("yes, %+.1f ms from the deadline", num(v))
			} else if v, ok := c["closed_after_restart_ms"]; ok {
				res += fmt.Sprintf("; closed %.0f ms after the daemon was restarted", num(v))
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c["system"], c["killed"], res)
		}
		b.WriteString("\n![Request to open port](img/latency.png)\n\n![Expiry precision](img/expiry.png)\n")
		return b.String(), true
	},
	"latency": func(dir string) (string, bool) {
		g, ok := load(dir, "grant_latency")
		if !ok {
			return "", false
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%0.f trials per path (ms):\n\n| path | p50 | p90 | p99 | max | min |\n|---|---|---|---|---|---|\n", g.f("trials"))
		for _, r := range []struct{ name, key string }{
			{"jitgate: API call → first connection", "jitgate_open"},
			{"— the API call alone (answers pending)", "jitgate_api_call"},
			{"— the API call in trials with no poller running", "jitgate_api_call_no_poller"},
			{"— activation recorded by the server", "jitgate_activated"},
			{"— the same open seen by the fine poller (a SYN every 0.1 ms from the call on, its own process)", "jitgate_open_fine_poller"},
			{"— the API call in those trials", "jitgate_api_call_fine_poller"},
			{"— the same open seen by the fine poller inside the test process (earlier runs)", "jitgate_open_inprocess_poller"},
			{"— the API call in those trials", "jitgate_api_call_inprocess_poller"},
			{"— the same open seen by the 1 ms dial poller of earlier runs", "jitgate_open_dial"},
			{"kernel path: one netlink `Apply` → first connection", "kernel_apply_open"},
			{"— the same seen by the 1 ms dial poller of earlier runs", "kernel_apply_open_dial"},
			{"kernel path: `nft add element` → first connection", "nft_binary_open"},
		} {
			if _, ok := g[r.key]; !ok {
				continue // a result file from before the instrument changed
			}
			fmt.Fprintf(&b, "| %s | %s |\n", r.name, dist(g.o(r.key)))
		}
		if v, ok := g["poll_interval_ms"]; ok {
			fmt.Fprintf(&b, "\nFirst connection seen by a connect attempt every %.1f ms (each on its own socket; the first to complete marks the open: resolution ~%.1f ms plus one round trip; %.0f attempts per jitgate trial; when the result has the fine poller's rows, the first connection is instead a SYN sent from a process of its own once the kernel notified the new element, never early); the dial poller's rows dial once at a time with a %.0f ms timeout (up to that much late).\n",
				num(v), num(v), g.f("jitgate_fine_poll_attempts_mean"), g.f("poll_timeout_ms"))
		}
		fmt.Fprintf(&b, "\njitgate p50 = %.2f × the netlink path, %.2f × `nft add element`. Targets: p50 ≤ %.0f ms: %s; p99 ≤ %.0f ms: %s.\n",
			g.f("jitgate_p50_over_kernel_p50"), g.f("jitgate_p50_over_nft_binary_p50"), g.f("target_p50_ms"), yes(g.b("met_p50")), g.f("target_p99_ms"), yes(g.b("met_p99")))
		return b.String(), true
	},
	"packetpath": func(dir string) (string, bool) {
		p, ok := load(dir, "packet_path")
		if !ok {
			return "", false
		}
		cs, _ := p["configs"].([]any)
		if len(cs) == 0 {
			return "", false
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%0.f dialers; each configuration measured %.0f s per round in %.1f s slices, %0.f rounds; one iperf3 stream of %0.f s per configuration and round; medians of the rounds.\n\n",
			p.f("dialers"), p.f("window_s"), p.f("slice_s"), p.f("rounds"), p.f("iperf_s"))
		b.WriteString("| ruleset | N other grants | loaded (elements / rules) | load time | new connections/s (rounds) | ratio to N=0 | control round | Gbit/s | ratio to N=0 | add one grant |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range cs {
			c := obj(c.(map[string]any))
			var rounds []string
			for _, r := range c.fs("conn_per_s") {
				rounds = append(rounds, fmt.Sprintf("%.0f", r))
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f s | **%.0f** (%s) | **%.3f** | %.0f | %.2f | %.3f | %.1f ms |\n",
				c["kind"], humanN(int(c.f("n"))), c.f("loaded"), c.f("load_s"), c.f("median_conn_per_s"), strings.Join(rounds, ", "),
				c.f("ratio_to_n0"), c.f("control_conn_per_s"), c.f("median_gbit_per_s"), c.f("gbps_ratio_to_n0"), c.f("add_one_grant_ms"))
		}
		fmt.Fprintf(&b, "\nTarget: jitgate at N = 100,000 ≥ %.2f of N = 0: %s. Failed connections: %.0f.\n\n", p.f("target_ratio_jitgate_100k"), yes(p.b("met")), p.f("errors"))
		b.WriteString("![Connection rate versus N](img/connrate.png)\n\n![Throughput versus N](img/throughput.png)\n")
		return b.String(), true
	},
	"load": func(dir string) (string, bool) {
		l, ok := load(dir, "load")
		if !ok {
			return "", false
		}
		var b strings.Builder
		b.WriteString("| measurement | result |\n|---|---|\n")
		row := func(k, format string, args ...any) { fmt.Fprintf(&b, "| %s | %s |\n", k, fmt.Sprintf(format, args...)) }
		row("database", "SQLite; %.0f targets, %.0f live grants (%.0f on the real agent's target), seeded in %.1f s", l.f("targets"), l.f("live_grants_seeded"), l.f("agent_target_grants"), l.f("seed_s"))
		row("open-loop load", "%.0f requests/s for %.0f s: %.0f sent, %.0f active (%.1f/s), **%.0f errors**", l.f("rate_per_s"), l.f("seconds"), l.f("sent"), l.f("activated"), l.f("activated_per_s"), l.f("errors"))
		c, a, ap := l.o("create_call"), l.o("create_to_active"), l.o("agent_apply_during_load")
		// In create mode (wait_mode "create") the create waits for the
		// agent: its answer is the activation, not the call.
		createLabel := "POST /api/v1/requests (answers pending), ms"
		if mode, _ := l["wait_mode"].(string); mode == "create" {
			createLabel = "POST /api/v1/requests?wait= (answers once active), ms"
		}
		row(createLabel, "p50 %.1f, p90 %.1f, p99 %.1f, max %.1f", c.f("p50_ms"), c.f("p90_ms"), c.f("p99_ms"), c.f("max_ms"))
		row("request → active (agent confirmed), ms", "p50 **%.1f**, p90 %.1f, p99 **%.1f**, max %.1f", a.f("p50_ms"), a.f("p90_ms"), a.f("p99_ms"), a.f("max_ms"))
		// Results written before the Server-Timing header have no api_call.
		if call := l.o("api_call"); call.f("n") > 0 {
			row("API call (answer minus the server's wait, Server-Timing), ms", "p50 **%.1f**, p90 %.1f, p99 **%.1f**, max %.1f", call.f("p50_ms"), call.f("p90_ms"), call.f("p99_ms"), call.f("max_ms"))
		}
		row("agent's own time per apply during the load, ms", "%.0f applies: p50 %.1f, p90 %.1f, max %.1f", ap.f("n"), ap.f("p50_ms"), ap.f("p90_ms"), ap.f("max_ms"))
		row("kernel elements on the agent's host after the load", "%.0f", l.f("kernel_elements_after_load"))
		row("RSS at 10,000 targets / 100,000 grants", "server %.1f MiB, agent %.1f MiB", l.f("server_rss_mib"), l.f("agent_rss_mib"))
		row("server restart (kill -9, start) → first successful request", "%.0f ms", l.f("server_restart_to_first_request_ms"))
		row("agent's target with ≥ 100,000 grants: first apply after the server restart", "%.0f ms; kernel holds %.0f elements", l.f("big_first_apply_ms"), l.f("kernel_elements_big"))
		row("RSS with 100,000 grants on the agent's target", "agent %.1f MiB, server %.1f MiB", l.f("agent_rss_big_mib"), l.f("server_rss_big_mib"))
		var rs []string
		for _, v := range l.fs("agent_restart_to_reconciled_ms") {
			rs = append(rs, fmt.Sprintf("%.0f", v))
		}
		row("agent restart (kill -9, start) with 100,000 grants → reconciled", "%s ms", strings.Join(rs, ", "))
		return b.String(), true
	},
	"expiry": func(dir string) (string, bool) {
		e, ok := load(dir, "expiry")
		if !ok {
			return "", false
		}
		fr, ls := e.o("first_refusal_summary"), e.o("last_success_summary")
		return fmt.Sprintf("| measurement | result |\n|---|---|\n"+
			"| first refused attempt − deadline (%.0f trials, %.0f s grants, server and agent killed) | median %+.2f ms, min %+.2f, **max %+.2f** |\n"+
			"| last successful attempt − deadline | median %+.2f ms, min %+.2f, max %+.2f |\n"+
			"| target: refused ≤ %.0f ms after the deadline | %s |\n",
			e.f("trials"), e.f("grant_s"), fr.f("p50_ms"), fr.f("min_ms"), fr.f("max_ms"), ls.f("p50_ms"), ls.f("min_ms"), ls.f("max_ms"),
			e.f("target_refused_within_ms"), yes(e.b("met"))), true
	},
	"crash": func(dir string) (string, bool) {
		c, ok := load(dir, "crash")
		if !ok {
			return "", false
		}
		kv := func(o obj) string {
			var ks []string
			for k := range o {
				ks = append(ks, k)
			}
			sort.Strings(ks)
			var out []string
			for _, k := range ks {
				out = append(out, fmt.Sprintf("%s %.0f", k, o.f(k)))
			}
			return strings.Join(out, ", ")
		}
		vs, _ := c["violations"].([]any)
		return fmt.Sprintf("| | |\n|---|---|\n| trials | %.0f in %.0f s (seed %s) |\n| crash points | %s |\n| processes killed (SIGKILL) | %s |\n"+
			"| requests made | %.0f (%.0f answers cut off by a kill) |\n| how recorded requests ended | %s |\n"+
			"| packet checks | %.0f \"open when reported active\", %.0f \"closed 1 s past the deadline\" |\n| **violations** | **%d** |\n",
			c.f("trials"), c.f("duration_ns")/1e9, c["seed"], kv(c.o("trials_per_point")), kv(c.o("kills")), c.f("requests"), c.f("lost_answers"),
			kv(c.o("ended")), c.f("open_checks"), c.f("closed_checks"), len(vs)), true
	},
}

// writeTables rewrites every generated section of doc whose result exists.
func writeTables(dir, doc string) error {
	b, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	s := string(b)
	for name, render := range sections {
		begin, end := "<!-- GENERATED by bench/report: "+name+" -->\n", "<!-- END GENERATED: "+name+" -->"
		i, j := strings.Index(s, begin), strings.Index(s, end)
		if i < 0 || j < i {
			log.Printf("%s: no generated section %q", doc, name)
			continue
		}
		body, ok := render(dir)
		if !ok {
			log.Printf("%s: no result for section %q; kept as it was", doc, name)
			continue
		}
		s = s[:i+len(begin)] + body + s[j:]
	}
	return os.WriteFile(doc, []byte(s), 0o644)
}
