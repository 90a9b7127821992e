package bench

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/docker/go-units"
)

// WritePlot draws r as one SVG: bars per workload (median time as a ratio
// to kernel overlay, log scale; to the fastest driver when overlay was not
// measured), then the two scaling curves: lookup latency against layer
// count and copy-up time against file size. Wrong results are drawn
// hollow with a "!" above the bar.
func (r *Report) WritePlot(w io.Writer) error {
	p := &svg{w: bufio.NewWriter(w)}
	drivers := r.measured()
	const width = 960
	var height = 40.0
	panels := []func(y float64) float64{
		func(y float64) float64 { return r.plotBars(p, drivers, y, width) },
		func(y float64) float64 {
			return r.plotCurve(p, drivers, y, width, "lookup-scaling", "lookup latency against layers crossed", "layers", "µs per lookup (log)", true,
				func(c *Cell) float64 { return c.Median * 1e6 / float64(max(c.Ops, 1)) },
				func(x int64) string { return fmt.Sprint(x) })
		},
		func(y float64) float64 {
			return r.plotCurve(p, drivers, y, width, "copyup-scaling", "copy-up time against file size", "file size", "seconds (log)", true,
				func(c *Cell) float64 { return c.Median },
				func(x int64) string { return strings.ReplaceAll(units.BytesSize(float64(x)), ".0", "") })
		},
	}
	// Draw into a buffer first: the height is known only at the end.
	var body strings.Builder
	p.out = &body
	for _, panel := range panels {
		height = panel(height)
	}
	fmt.Fprintf(p.w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(p.w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height+20, width, height+20)
	fmt.Fprintf(p.w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	p.text(width/2, 22, "middle", 16, fmt.Sprintf("lamina bench — %s, %d CPUs, %s", r.Machine.Kernel, r.Machine.CPUs, r.Started.Format("2006-01-02 15:04 UTC")))
	_, _ = p.w.WriteString(body.String())
	p.w.WriteString("</svg>\n")
	return p.w.Flush()
}

var palette = []string{"#1f77b4", "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b", "#e377c2", "#7f7f7f"}

func color(drivers []string, d string) string {
	return palette[slices.Index(drivers, d)%len(palette)]
}

type svg struct {
	w   *bufio.Writer
	out *strings.Builder // body, written before the header knows the height
}

func (p *svg) printf(format string, args ...any) { fmt.Fprintf(p.out, format, args...) }

// esc escapes s for SVG text and attributes. html's escaper, not
// encoding/xml's: encoding/xml's initialisation builds tables in every
// lamina process, html's are built when first used.
func esc(s string) string { return html.EscapeString(s) }

func (p *svg) text(x, y float64, anchor string, size int, s string) {
	t := fmt.Sprintf(`<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d">%s</text>`+"\n", x, y, anchor, size, esc(s))
	if p.out == nil {
		p.w.WriteString(t)
		return
	}
	p.out.WriteString(t)
}

func (p *svg) line(x1, y1, x2, y2 float64, stroke string, width float64) {
	p.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n", x1, y1, x2, y2, stroke, width)
}

func (p *svg) legend(drivers []string, x, y float64) {
	for i, d := range drivers {
		xx := x + float64(i)*130
		p.printf(`<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/>`+"\n", xx, y-10, color(drivers, d))
		p.text(xx+16, y, "start", 12, d)
	}
}

// plotBars draws the workload bars from top y and returns the next free y.
func (r *Report) plotBars(p *svg, drivers []string, top float64, width int) float64 {
	var workloads []string
	for _, c := range r.Results {
		if c.ParamUnit == "" && !slices.Contains(workloads, c.Workload) {
			workloads = append(workloads, c.Workload)
		}
	}
	if len(workloads) == 0 || len(drivers) == 0 {
		return top
	}
	ratio := func(c *Cell) float64 {
		if c.Ratio > 0 {
			return c.Ratio
		}
		best := math.Inf(1)
		for _, d := range drivers {
			if o := r.Cell(c.Workload, d, 0); o != nil && o.Median > 0 {
				best = math.Min(best, o.Median)
			}
		}
		return c.Median / best
	}
	base := "kernel overlay"
	if !slices.Contains(drivers, "overlay") {
		base = "the fastest driver"
	}
	lo, hi := 1.0, 1.0
	for _, wl := range workloads {
		for _, d := range drivers {
			if c := r.Cell(wl, d, 0); c != nil && c.Median > 0 {
				v := ratio(c)
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	// Clamp the axis so one extreme bar (native's copy-up is a plain
	// write, hundreds of times faster) does not flatten all the others;
	// a clipped bar is labelled with its value.
	lo = math.Max(math.Pow(2, math.Floor(math.Log2(lo))), 1.0/32)
	hi = math.Min(math.Pow(2, math.Ceil(math.Log2(hi))), 64)
	if hi <= lo {
		hi = lo * 2
	}
	x0, x1 := 70.0, float64(width)-20
	y0, y1 := top+40, top+300 // plot area, y1 at the bottom
	p.text(float64(width)/2, top+20, "middle", 14, "median time per workload, ratio to "+base+" (log scale; lower is faster)")
	ypos := func(v float64) float64 {
		return y1 - (math.Log2(v)-math.Log2(lo))/(math.Log2(hi)-math.Log2(lo))*(y1-y0)
	}
	for v := lo; v <= hi*1.001; v *= 2 {
		y := ypos(v)
		p.line(x0, y, x1, y, "#ddd", 1)
		tick := trimFloat(v) + "x"
		if v < 1 {
			tick = "1/" + trimFloat(1/v) + "x"
		}
		p.text(x0-6, y+4, "end", 11, tick)
	}
	p.line(x0, ypos(1), x1, ypos(1), "#444", 1.5)
	group := (x1 - x0) / float64(len(workloads))
	bar := math.Min(18, (group-10)/float64(len(drivers)))
	for i, wl := range workloads {
		gx := x0 + float64(i)*group + (group-bar*float64(len(drivers)))/2
		for j, d := range drivers {
			c := r.Cell(wl, d, 0)
			if c == nil || c.Median <= 0 {
				continue
			}
			v := ratio(c)
			clipped := v < lo || v > hi
			x, y := gx+float64(j)*bar, ypos(math.Min(math.Max(v, lo), hi))
			ytop, h := math.Min(y, ypos(1)), math.Abs(ypos(1)-y)
			fill, stroke := color(drivers, d), "none"
			if !c.OK() {
				fill, stroke = "white", color(drivers, d)
				p.text(x+bar/2, ytop-3, "middle", 11, "!")
			}
			p.printf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" stroke="%s" stroke-width="1.5"><title>%s %s: %.3f s (%.2fx)</title></rect>`+"\n",
				x, ytop, bar-1, math.Max(h, 1), fill, stroke, esc(d), esc(wl), c.Median, v)
			if clipped && v > hi {
				p.text(x+bar/2, y-3, "middle", 9, trimFloat(v)+"x")
			} else if clipped {
				// Up the inside of the bar, from its clipped end.
				p.printf(`<text transform="translate(%.1f,%.1f) rotate(-90)" font-size="9" fill="white">%s</text>`+"\n",
					x+bar/2+3, y-4, esc(trimFloat(v)+"x"))
			}
		}
		p.printf(`<text transform="translate(%.1f,%.1f) rotate(-30)" text-anchor="end" font-size="11">%s</text>`+"\n", x0+float64(i)*group+group/2, y1+14, esc(wl))
	}
	p.legend(drivers, x0, y1+90)
	return y1 + 110
}

// plotCurve draws one scaling curve (x on a log2 axis; y linear from 0,
// or log10 when logY) and returns the next free y.
func (r *Report) plotCurve(p *svg, drivers []string, top float64, width int, workload, title, xlabel, ylabel string, logY bool,
	yval func(*Cell) float64, xfmt func(int64) string) float64 {
	var xs []int64
	ymin, ymax := math.Inf(1), 0.0
	for i := range r.Results {
		c := &r.Results[i]
		if c.Workload != workload || c.Median <= 0 {
			continue
		}
		if !slices.Contains(xs, c.Param) {
			xs = append(xs, c.Param)
		}
		ymin, ymax = math.Min(ymin, yval(c)), math.Max(ymax, yval(c))
	}
	if len(xs) == 0 {
		return top
	}
	slices.Sort(xs)
	x0, x1 := 90.0, float64(width)-30
	y0, y1 := top+40, top+280
	p.text(float64(width)/2, top+20, "middle", 14, title)
	lx := func(x int64) float64 {
		if len(xs) == 1 {
			return (x0 + x1) / 2
		}
		a, b := math.Log2(float64(xs[0])), math.Log2(float64(xs[len(xs)-1]))
		return x0 + (math.Log2(float64(x))-a)/(b-a)*(x1-x0)
	}
	var ly func(float64) float64
	var ticks []float64
	if logY {
		a, b := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
		if b <= a {
			b = a + 1
		}
		ly = func(v float64) float64 { return y1 - (math.Log10(v)-a)/(b-a)*(y1-y0) }
		for e := a; e <= b; e++ {
			ticks = append(ticks, math.Pow(10, e))
		}
	} else {
		step := niceStep(ymax / 5)
		top := math.Ceil(ymax/step) * step
		if top == 0 {
			top = 1
		}
		ly = func(v float64) float64 { return y1 - v/top*(y1-y0) }
		for v := 0.0; v <= top*1.0001; v += step {
			ticks = append(ticks, v)
		}
	}
	for _, v := range ticks {
		p.line(x0, ly(v), x1, ly(v), "#ddd", 1)
		p.text(x0-6, ly(v)+4, "end", 11, trimFloat(v))
	}
	for _, x := range xs {
		p.line(lx(x), y1, lx(x), y1+4, "#444", 1)
		p.text(lx(x), y1+17, "middle", 11, xfmt(x))
	}
	p.line(x0, y1, x1, y1, "#444", 1)
	p.text((x0+x1)/2, y1+34, "middle", 12, xlabel)
	p.printf(`<text transform="translate(%.1f,%.1f) rotate(-90)" text-anchor="middle" font-size="12">%s</text>`+"\n", x0-55, (y0+y1)/2, esc(ylabel))
	for _, d := range drivers {
		var pts []string
		for _, x := range xs {
			c := r.Cell(workload, d, x)
			if c == nil || c.Median <= 0 {
				continue
			}
			px, py := lx(x), ly(yval(c))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
			fill := color(drivers, d)
			if !c.OK() {
				fill = "white"
			}
			p.printf(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s" stroke="%s"><title>%s %s: %s</title></circle>`+"\n",
				px, py, fill, color(drivers, d), esc(d), esc(xfmt(x)), esc(trimFloat(yval(c))))
		}
		if len(pts) > 1 {
			p.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color(drivers, d))
		}
	}
	p.legend(drivers, x0, y1+58)
	return y1 + 80
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3g", v)
	if strings.Contains(s, "e") {
		s = fmt.Sprintf("%g", v)
	}
	return s
}
