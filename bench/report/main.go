// Command report turns the JSON results the benchmarks write (bench/results/)
// into the charts and tables of docs/benchmarks.md: PNG charts drawn with the
// standard library only (a 5x7 bitmap font, lines, boxes and dots), and the
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
	"image"
	"image/color"
	"image/png"
	"log"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

var (
	white  = color.RGBA{255, 255, 255, 255}
	black  = color.RGBA{30, 30, 30, 255}
	grey   = color.RGBA{200, 200, 200, 255}
	blue   = color.RGBA{31, 119, 180, 255}
	orange = color.RGBA{230, 110, 20, 255}
	green  = color.RGBA{44, 160, 44, 255}
	red    = color.RGBA{214, 39, 40, 255}
	purple = color.RGBA{148, 103, 189, 255}
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
	var peers struct {
		Jitgate, FwknopPcap, FwknopUDP summary
		JitgateExpiry, FwknopExpiry    []float64
	}
	var peersRaw map[string]json.RawMessage
	var grant map[string]json.RawMessage
	rows := []boxRow{}
	if read(*results, "grant_latency", &grant) {
		for _, k := range []struct{ key, label string }{
			{"kernel_apply_open", "kernel path: one netlink apply"},
			{"nft_binary_open", "kernel path: nft add element"},
		} {
			var s summary
			json.Unmarshal(grant[k.key], &s)
			rows = append(rows, boxRow{k.label, s, green})
		}
	}
	if read(*results, "peers", &peersRaw) {
		json.Unmarshal(peersRaw["jitgate_open"], &peers.Jitgate)
		json.Unmarshal(peersRaw["fwknop_pcap_open"], &peers.FwknopPcap)
		json.Unmarshal(peersRaw["fwknop_udp_open"], &peers.FwknopUDP)
		json.Unmarshal(peersRaw["jitgate_first_refusal_minus_deadline_ms"], &peers.JitgateExpiry)
		json.Unmarshal(peersRaw["fwknop_first_refusal_minus_deadline_ms"], &peers.FwknopExpiry)
		rows = append(rows,
			boxRow{"jitgate: api call to open port", peers.Jitgate, blue},
			boxRow{"fwknop udp-server mode", peers.FwknopUDP, orange},
			boxRow{"fwknop capture mode (default)", peers.FwknopPcap, red})
		save(*out, "expiry.png", dots("Expiry precision: first refused connection - deadline (ms)",
			[]dotRow{{"jitgate (kernel timeout)", peers.JitgateExpiry, blue}, {"fwknop (userspace, 1 s)", peers.FwknopExpiry, red}}))
	}
	if len(rows) > 0 {
		save(*out, "latency.png", boxes("Request to open port (ms, log scale): box p50-p90, whiskers min-max, tick p99", rows))
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
	if read(*results, "packet_path", &pp) {
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
		save(*out, "connrate.png", lines("New TCP connections/s through the protected port vs other grants (N)", xs, conn, "%.0f"))
		save(*out, "throughput.png", lines("One TCP stream (iperf3), Gbit/s, vs other grants (N)", xs, tput, "%.1f"))
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

func save(dir, name string, img image.Image) {
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		log.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s", p)
}

func humanN(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dK", n/1000)
	}
	return fmt.Sprint(n)
}

// canvas is an image with drawing helpers.
type canvas struct{ *image.RGBA }

func newCanvas(w, h int) canvas {
	c := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fill(0, 0, w, h, white)
	return c
}

func (c canvas) fill(x0, y0, x1, y1 int, col color.Color) {
	for y := min(y0, y1); y < max(y0, y1); y++ {
		for x := min(x0, x1); x < max(x0, x1); x++ {
			c.Set(x, y, col)
		}
	}
}

// line draws a line of width w.
func (c canvas) line(x0, y0, x1, y1 float64, w int, col color.Color) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		x, y := int(x0+(x1-x0)*t), int(y0+(y1-y0)*t)
		c.fill(x-w/2, y-w/2, x-w/2+w, y-w/2+w, col)
	}
}

const scale = 2 // text pixels per font pixel

// text draws s upper-cased with its top-left corner at (x, y).
func (c canvas) text(x, y int, s string, col color.Color) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[unicode.ToUpper(r)]
		if !ok {
			g = glyphs['*']
		}
		for gy, row := range g {
			for gx, ch := range row {
				if ch == '#' {
					c.fill(x+gx*scale, y+gy*scale, x+(gx+1)*scale, y+(gy+1)*scale, col)
				}
			}
		}
		x += 6 * scale
	}
}

func textWidth(s string) int { return len([]rune(s)) * 6 * scale }

const textHeight = 7 * scale

type boxRow struct {
	label string
	s     summary
	col   color.Color
}

// boxes draws one row per distribution on a log-scale axis in ms.
func boxes(title string, rows []boxRow) image.Image {
	const w, rowH, left, right, top = 1400, 70, 440, 60, 70
	h := top + rowH*len(rows) + 80
	c := newCanvas(w, h)
	c.text(20, 20, title, black)
	lo, hi := 1.0, 1000.0
	for _, r := range rows {
		for lo > r.s.Min && lo > 0.01 {
			lo /= 10
		}
		for hi < r.s.Max {
			hi *= 10
		}
	}
	x := func(v float64) float64 {
		v = math.Max(v, lo)
		return left + (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*float64(w-left-right)
	}
	bottom := top + rowH*len(rows)
	for v := lo; v <= hi*1.001; v *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v*m > hi*1.001 {
				continue
			}
			xx := x(v * m)
			c.line(xx, top-10, xx, float64(bottom), 1, grey)
			lbl := strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v*m), "0"), ".")
			c.text(int(xx)-textWidth(lbl)/2, bottom+10, lbl, black)
		}
	}
	c.text(left+(w-left-right)/2-textWidth("milliseconds")/2, bottom+40, "milliseconds", black)
	for i, r := range rows {
		y := float64(top + i*rowH + rowH/2)
		c.text(20, int(y)-textHeight/2, r.label, black)
		c.line(x(r.s.Min), y, x(r.s.Max), y, 2, r.col)
		c.line(x(r.s.Min), y-8, x(r.s.Min), y+8, 2, r.col)
		c.line(x(r.s.Max), y-8, x(r.s.Max), y+8, 2, r.col)
		c.fill(int(x(r.s.P50)), int(y)-14, int(x(r.s.P90))+2, int(y)+14, r.col)
		c.line(x(r.s.P50), y-18, x(r.s.P50), y+18, 4, black)
		c.line(x(r.s.P99), y-14, x(r.s.P99), y+14, 3, black)
		lbl := fmt.Sprintf("p50 %.1f", r.s.P50)
		c.text(int(x(r.s.Max))+12, int(y)-textHeight/2, lbl, black)
	}
	return c
}

type dotRow struct {
	label string
	vs    []float64
	col   color.Color
}

// dots draws each row's values as dots on a linear axis with a zero line.
func dots(title string, rows []dotRow) image.Image {
	const w, rowH, left, right, top = 1400, 80, 440, 60, 70
	h := top + rowH*len(rows) + 80
	c := newCanvas(w, h)
	c.text(20, 20, title, black)
	lo, hi := -10.0, 10.0
	for _, r := range rows {
		for _, v := range r.vs {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	step := niceStep((hi - lo) / 8)
	lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	x := func(v float64) float64 { return left + (v-lo)/(hi-lo)*float64(w-left-right) }
	bottom := top + rowH*len(rows)
	for v := lo; v <= hi+step/2; v += step {
		col := grey
		if math.Abs(v) < step/2 {
			col = black
		}
		c.line(x(v), top-10, x(v), float64(bottom), 1, col)
		lbl := fmt.Sprintf("%.0f", v)
		c.text(int(x(v))-textWidth(lbl)/2, bottom+10, lbl, black)
	}
	c.text(left, bottom+40, "ms after the deadline (negative: closed early)", black)
	for i, r := range rows {
		y := top + i*rowH + rowH/2
		c.text(20, y-textHeight/2, r.label, black)
		for j, v := range r.vs {
			dy := (j%3 - 1) * 10
			c.fill(int(x(v))-6, y+dy-6, int(x(v))+6, y+dy+6, r.col)
		}
	}
	return c
}

func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

type lineSeries struct {
	name string
	ys   []float64
	col  color.Color
}

// lines draws series over categorical x values, y from 0, with value labels.
func lines(title string, xs []string, series []lineSeries, format string) image.Image {
	const w, h, left, right, top, bottom = 1200, 700, 140, 60, 110, 90
	c := newCanvas(w, h)
	c.text(20, 20, title, black)
	ymax := 0.0
	for _, s := range series {
		for _, y := range s.ys {
			ymax = math.Max(ymax, y)
		}
	}
	step := niceStep(ymax / 6)
	ymax = math.Ceil(ymax*1.1/step) * step
	px := func(i int) float64 {
		return left + 40 + float64(i)*float64(w-left-right-80)/float64(max(len(xs)-1, 1))
	}
	py := func(v float64) float64 { return float64(h-bottom) - v/ymax*float64(h-top-bottom) }
	for v := 0.0; v <= ymax+step/2; v += step {
		c.line(left, py(v), float64(w-right), py(v), 1, grey)
		lbl := fmt.Sprintf(format, v)
		c.text(left-12-textWidth(lbl), int(py(v))-textHeight/2, lbl, black)
	}
	for i, xl := range xs {
		c.text(int(px(i))-textWidth(xl)/2, h-bottom+14, xl, black)
	}
	c.text(w/2-textWidth("other grants (n)")/2, h-bottom+46, "other grants (N)", black)
	for k, s := range series {
		c.fill(left+20+k*420, 60, left+50+k*420, 72, s.col)
		c.text(left+60+k*420, 59, s.name, black)
		for i := range s.ys {
			if i > 0 {
				c.line(px(i-1), py(s.ys[i-1]), px(i), py(s.ys[i]), 4, s.col)
			}
		}
		for i, y := range s.ys {
			c.fill(int(px(i))-7, int(py(y))-7, int(px(i))+7, int(py(y))+7, s.col)
			lbl := fmt.Sprintf(format, y)
			// One series labels above and left of its points, the other
			// below and right, so that close values do not overprint.
			x, dy := int(px(i))-textWidth(lbl)-4, -30
			if k == 1 {
				x, dy = int(px(i))+4, 16
			}
			c.text(x, int(py(y))+dy, lbl, s.col)
		}
	}
	return c
}
