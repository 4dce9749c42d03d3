// Command report turns the JSON results the benchmarks write (bench/results/)
// into the charts and tables of docs/benchmarks.md: PNG charts drawn with
// gonum.org/v1/plot (real fonts, axes and legends; charts.go), and the
// tables between the GENERATED markers of the document, which it rewrites
// (the prose around them is left alone).
//
//	go run ./bench/report -results bench/results -img docs/img -doc docs/benchmarks.md
//
// A missing result file skips its charts and keeps its table as it was.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

func main() {
	results := flag.String("results", "bench/results", "directory of the benchmarks' JSON results")
	out := flag.String("img", "docs/img", "directory to write the PNG charts to")
	doc := flag.String("doc", "", "markdown document whose GENERATED sections to rewrite (none if empty)")
	flag.Parse()
	if *doc != "" {
		if err := writeTables(*results, *doc); err != nil {
			log.Fatal(err)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	drawCharts(*results, *out)
}

// drawCharts writes the PNG charts of the results in dir results to dir out.
func drawCharts(results, out string) {
	var peers struct {
		Jitgate, FwknopPcap, FwknopUDP summary
		JitgateExpiry, FwknopExpiry    []float64
	}
	var peersRaw map[string]json.RawMessage
	var grant map[string]json.RawMessage
	rows := []boxRow{}
	if read(results, "grant_latency", &grant) {
		for _, k := range []struct{ key, label string }{
			{"kernel_apply_open", "kernel path: one netlink apply"},
			{"nft_binary_open", "kernel path: nft add element"},
		} {
			var s summary
			decodeField(grant[k.key], &s)
			rows = append(rows, boxRow{k.label, s, green})
		}
	}
	if read(results, "peers", &peersRaw) {
		decodeField(peersRaw["jitgate_open"], &peers.Jitgate)
		decodeField(peersRaw["fwknop_pcap_open"], &peers.FwknopPcap)
		decodeField(peersRaw["fwknop_udp_open"], &peers.FwknopUDP)
		decodeField(peersRaw["jitgate_first_refusal_minus_deadline_ms"], &peers.JitgateExpiry)
		decodeField(peersRaw["fwknop_first_refusal_minus_deadline_ms"], &peers.FwknopExpiry)
		rows = append(rows,
			boxRow{"jitgate: api call to open port", peers.Jitgate, blue},
			boxRow{"fwknop udp-server mode", peers.FwknopUDP, orange},
			boxRow{"fwknop capture mode (default)", peers.FwknopPcap, red})
		save(out, "expiry.png", dots("Expiry precision: first refused connection - deadline (ms)",
			[]dotRow{{"jitgate (kernel timeout)", peers.JitgateExpiry, blue}, {"fwknop (userspace, 1 s)", peers.FwknopExpiry, red}}))
	}
	if len(rows) > 0 {
		save(out, "latency.png", boxes("Request to open port (ms, log scale): box p50-p90, whiskers min-max, tick p99", rows))
	}
	var pp struct {
		Configs []struct {
			Kind       string    `json:"kind"`
			N          int       `json:"n"`
			Median     float64   `json:"median_conn_per_s"`
			Rates      []float64 `json:"conn_per_s"`
			MedianGbps float64   `json:"median_gbit_per_s"`
		} `json:"configs"`
	}
	if read(results, "packet_path", &pp) {
		series := map[string]*lineSeries{}
		gbps := map[string]*lineSeries{}
		var xs []string
		for _, c := range pp.Configs {
			if series[c.Kind] == nil {
				col := blue
				if c.Kind != "jitgate" {
					col = red
				}
				series[c.Kind] = &lineSeries{name: c.Kind, col: col}
				gbps[c.Kind] = &lineSeries{name: c.Kind, col: col}
			}
			series[c.Kind].ys = append(series[c.Kind].ys, c.Median)
			gbps[c.Kind].ys = append(gbps[c.Kind].ys, c.MedianGbps)
			if c.Kind == "jitgate" {
				xs = append(xs, humanN(c.N))
			}
		}
		label := map[string]string{"jitgate": "jitgate: one set lookup", "iptables": "iptables: one rule per grant"}
		var conn, tput []lineSeries
		for _, k := range []string{"jitgate", "iptables"} {
			if s := series[k]; s != nil {
				s.name, gbps[k].name = label[k], label[k]
				conn, tput = append(conn, *s), append(tput, *gbps[k])
			}
		}
		save(out, "connrate.png", lines("New TCP connections/s through the protected port vs other grants (N)", xs, conn, "%.0f"))
		save(out, "throughput.png", lines("One TCP stream (iperf3), Gbit/s, vs other grants (N)", xs, tput, "%.1f"))
	}
}

type summary struct {
	N   int     `json:"n"`
	Min float64 `json:"min_ms"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func read(dir, name string, v any) bool {
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		log.Printf("skipping %s: %v", name, err)
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	return true
}

// save renders a chart as a PNG.
func save(dir, name string, c chart) {
	path := filepath.Join(dir, name)
	if err := c.Save(c.w, c.h, path); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s", path)
}

func humanN(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dK", n/1000)
	}
	return fmt.Sprint(n)
}

// decodeField decodes one member of a result file; a missing member leaves
// v zero, a malformed one stops the report.
func decodeField(raw json.RawMessage, v any) {
	if raw == nil {
		return
	}
	if err := json.Unmarshal(raw, v); err != nil {
		log.Fatalf("decoding a result: %v", err)
	}
}
