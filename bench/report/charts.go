package main

import (
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	black  = color.RGBA{30, 30, 30, 255}
	blue   = color.RGBA{31, 119, 180, 255}
	orange = color.RGBA{230, 110, 20, 255}
	green  = color.RGBA{44, 160, 44, 255}
	red    = color.RGBA{214, 39, 40, 255}
)

// chart is a plot with the size to render it at.
type chart struct {
	*plot.Plot
	w, h vg.Length
}

func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.TextStyle.Font.Size = vg.Points(11)
	p.Legend.Top = true
	return p
}

type boxRow struct {
	label string
	s     summary
	col   color.Color
}

// summaryBoxes draws a row per distribution from its summary: a whisker
// from min to max, a box from p50 to p90, a thick mark at p50 and a tick at
// p99 (a box plot of precomputed quantiles, which plotter.BoxPlot cannot
// take).
type summaryBoxes []boxRow

func (b summaryBoxes) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	ln := func(x0, y0, x1, y1 vg.Length, w vg.Length, col color.Color) {
		c.StrokeLine2(draw.LineStyle{Color: col, Width: w}, x0, y0, x1, y1)
	}
	for i, r := range b {
		y := trY(float64(i))
		h := vg.Points(9)
		ln(trX(r.s.Min), y, trX(r.s.Max), y, vg.Points(1.5), r.col)
		ln(trX(r.s.Min), y-h/2, trX(r.s.Min), y+h/2, vg.Points(1.5), r.col)
		ln(trX(r.s.Max), y-h/2, trX(r.s.Max), y+h/2, vg.Points(1.5), r.col)
		box := vg.Path{}
		box.Move(vg.Point{X: trX(r.s.P50), Y: y - h})
		box.Line(vg.Point{X: trX(r.s.P90), Y: y - h})
		box.Line(vg.Point{X: trX(r.s.P90), Y: y + h})
		box.Line(vg.Point{X: trX(r.s.P50), Y: y + h})
		box.Close()
		c.SetColor(r.col)
		c.Fill(box)
		ln(trX(r.s.P50), y-1.3*h, trX(r.s.P50), y+1.3*h, vg.Points(3), black)
		ln(trX(r.s.P99), y-h, trX(r.s.P99), y+h, vg.Points(2), black)
		sty := p.Y.Tick.Label // has the plot's font and text handler
		sty.Color, sty.XAlign, sty.YAlign = black, draw.XLeft, draw.YCenter
		c.FillText(sty, vg.Point{X: trX(r.s.Max) + vg.Points(6), Y: y}, "p50 "+strconv.FormatFloat(r.s.P50, 'g', 3, 64))
	}
}

func (b summaryBoxes) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, r := range b {
		xmin, xmax = math.Min(xmin, r.s.Min), math.Max(xmax, r.s.Max)
	}
	return xmin, xmax, -0.5, float64(len(b)) - 0.5
}

// boxes draws one row per distribution on a log-scale axis in ms.
func boxes(title string, rows []boxRow) chart {
	p := newPlot(title)
	lo, hi := 1.0, 1000.0
	for _, r := range rows {
		for lo > r.s.Min && lo > 0.01 {
			lo /= 10
		}
		for hi < r.s.Max {
			hi *= 10
		}
	}
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min, p.X.Max = lo, hi*3 // room for the p50 labels
	p.X.Label.Text = "milliseconds (log scale)"
	p.Add(plotter.NewGrid())
	p.Add(summaryBoxes(rows))
	labels := make([]string, len(rows))
	for i, r := range rows {
		labels[i] = r.label
	}
	p.NominalY(labels...)
	p.Y.Min, p.Y.Max = -0.6, float64(len(rows))-0.4
	return chart{p, 10 * vg.Inch, vg.Length(1.2+0.55*float64(len(rows))) * vg.Inch}
}

type dotRow struct {
	label string
	vs    []float64
	col   color.Color
}

// dots draws each row's values as dots on a linear axis with a zero line.
func dots(title string, rows []dotRow) chart {
	p := newPlot(title)
	p.X.Label.Text = "ms after the deadline (negative: closed early)"
	p.Add(plotter.NewGrid())
	zero, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: -0.5}, {X: 0, Y: float64(len(rows)) - 0.5}})
	zero.Color = black
	p.Add(zero)
	labels := make([]string, len(rows))
	for i, r := range rows {
		labels[i] = r.label
		xys := make(plotter.XYs, len(r.vs))
		for j, v := range r.vs {
			xys[j] = plotter.XY{X: v, Y: float64(i) + float64(j%3-1)*0.12} // jitter: values that coincide stay visible
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			continue
		}
		sc.Color = r.col
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(3.5)
		p.Add(sc)
	}
	lo, hi := -10.0, 10.0
	for _, r := range rows {
		for _, v := range r.vs {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	pad := (hi - lo) * 0.05
	p.X.Min, p.X.Max = lo-pad, hi+pad
	p.NominalY(labels...)
	p.Y.Min, p.Y.Max = -0.6, float64(len(rows))-0.4
	return chart{p, 10 * vg.Inch, vg.Length(1.4+0.7*float64(len(rows))) * vg.Inch}
}

type lineSeries struct {
	name string
	ys   []float64
	col  color.Color
}

// lines draws series over categorical x values, y from 0, with value labels.
func lines(title string, xs []string, series []lineSeries, format string) chart {
	p := newPlot(title)
	p.X.Label.Text = "other grants (N)"
	p.Add(plotter.NewGrid())
	p.NominalX(xs...)
	p.X.Min, p.X.Max = -0.3, float64(len(xs))-0.6 // room for the value labels
	p.Legend.Top, p.Legend.Left = false, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(10), vg.Points(10)
	ymax := 0.0
	for _, s := range series {
		for _, y := range s.ys {
			ymax = math.Max(ymax, y)
		}
	}
	p.Y.Min, p.Y.Max = 0, ymax*1.12
	for k, s := range series {
		xys := make(plotter.XYs, len(s.ys))
		labels := make([]string, len(s.ys))
		for i, y := range s.ys {
			xys[i] = plotter.XY{X: float64(i), Y: y}
			labels[i] = fmt.Sprintf(format, y)
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			continue
		}
		l.Color, l.Width = s.col, vg.Points(2)
		pts.Color, pts.Shape, pts.Radius = s.col, draw.CircleGlyph{}, vg.Points(3.5)
		lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
		if err == nil {
			// One series labels above its points, the other below, so
			// that close values do not overprint.
			off := vg.Points(6)
			if k == 1 {
				off = -vg.Points(14)
			}
			for i := range lbl.TextStyle {
				lbl.TextStyle[i].Color = s.col
			}
			lbl.Offset = vg.Point{X: vg.Points(4), Y: off}
			p.Add(lbl)
		}
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	return chart{p, 10 * vg.Inch, 6 * vg.Inch}
}
