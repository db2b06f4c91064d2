package benchchart

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// A Figure is one number of a Point that a summary over several runs
// reports, with the target it is held to and the peer's figure beside it.
type Figure struct {
	Name   string
	Unit   string
	Target string // "" when none
	Peer   string // Flux v2.9.4's, as issue 18 gives it; "" when not measured
	get    func(Point) float64
}

// The figures the charts and the slope take from a summary.
const (
	figRSS  = "RSS, settled"
	figHeap = "Go heap in use, settled"
	figP50  = "push → applied p50"
	figP99  = "push → applied p99"
)

// Figures are the figures a summary reports, in the order of its table.
// A zero is "not measured": older results lack newer figures, and a run
// without a paused window has no idle control-plane CPU.
func Figures() []Figure {
	return []Figure{
		{figRSS, "MiB", "", "247–254 KiB per repository at 1,000", func(p Point) float64 { return p.RSSKiB / 1024 }},
		{figHeap, "MiB", "", "", func(p Point) float64 { return p.HeapKiB / 1024 }},
		{"live heap, settled", "MiB", "", "", func(p Point) float64 { return p.LiveKiB / 1024 }},
		{"first sync / direct applies", "×", "within 1.2×", "1,000 × 20 in 13m27s", func(p Point) float64 { return p.FirstSyncRatio }},
		{"controller CPU, quiet", "% of a core", "< 5% at 10,000", "35–44 CPU-s a minute", func(p Point) float64 { return p.ControllerCPUPercent }},
		{"API server + etcd CPU, quiet", "% of a core", "", "", func(p Point) float64 { return p.ControlPlaneCPUPercent }},
		{"controller + API server + etcd, quiet", "% of a core", "< 10% at 3,000 (issue 24)", "", func(p Point) float64 {
			if p.ControllerCPUPercent == 0 || p.ControlPlaneCPUPercent == 0 {
				return 0
			}
			return p.ControllerCPUPercent + p.ControlPlaneCPUPercent
		}},
		{figP50, "ms", "< 50", "0.83–1.82 s at 200, 66 s at 1,000", func(p Point) float64 { return p.PushP50Ms }},
		{figP99, "ms", "< 100", "4m52s at 1,000", func(p Point) float64 { return p.PushP99Ms }},
		{"of which the git fetch (mean)", "ms", "", "", func(p Point) float64 { return p.PushFetchMeanMs }},
		{"webhook reply p99", "ms", "< 10 (design §6)", "", func(p Point) float64 { return p.WebhookP99Ms }},
	}
}

// Spread is one figure at one point over the runs that measured it.
type Spread struct {
	Median, Min, Max float64
	Runs             int
}

// Summary is one number of repositories over several runs.
type Summary struct {
	Repos   int
	Figures map[string]Spread // by Figure.Name; absent when no run measured it
}

// Summarize folds runs (each one results.json of the harness) into a
// Summary per number of repositories, in increasing order.
func Summarize(runs [][]Point) []Summary {
	byRepos := map[int][]Point{}
	for _, run := range runs {
		for _, p := range run {
			byRepos[p.Repos] = append(byRepos[p.Repos], p)
		}
	}
	var out []Summary
	for _, n := range slices.Sorted(maps.Keys(byRepos)) {
		s := Summary{Repos: n, Figures: map[string]Spread{}}
		for _, f := range Figures() {
			var vs []float64
			for _, p := range byRepos[n] {
				if v := f.get(p); v != 0 {
					vs = append(vs, v)
				}
			}
			if len(vs) > 0 {
				s.Figures[f.Name] = spread(vs)
			}
		}
		out = append(out, s)
	}
	return out
}

// spread is vs's median (the mean of the middle two for an even count),
// smallest and largest.
func spread(vs []float64) Spread {
	vs = slices.Sorted(slices.Values(vs))
	n := len(vs)
	med := vs[n/2]
	if n%2 == 0 {
		med = (vs[n/2-1] + vs[n/2]) / 2
	}
	return Spread{Median: med, Min: vs[0], Max: vs[n-1], Runs: n}
}

// Medians is each summary as a Point of the median figures the charts and
// the slope need.
func Medians(sums []Summary) []Point {
	points := make([]Point, len(sums))
	for i, s := range sums {
		m := func(name string) float64 { return s.Figures[name].Median }
		points[i] = Point{Repos: s.Repos, RSSKiB: m(figRSS) * 1024, HeapKiB: m(figHeap) * 1024,
			PushP50Ms: m(figP50), PushP99Ms: m(figP99)}
	}
	return points
}

// WriteTable writes sums as a Markdown table: a row per figure, a column
// per number of repositories holding "median (min–max, runs)", then the
// target and the peer's figure. The RSS and heap slopes, fitted to the
// medians, close it.
func WriteTable(w io.Writer, sums []Summary) error {
	var b strings.Builder
	b.WriteString("| figure |")
	for _, s := range sums {
		fmt.Fprintf(&b, " %s |", thousands(s.Repos))
	}
	b.WriteString(" target | Flux v2.9.4 |\n|---|")
	b.WriteString(strings.Repeat("---|", len(sums)+2) + "\n")
	for _, f := range Figures() {
		fmt.Fprintf(&b, "| %s (%s) |", f.Name, f.Unit)
		for _, s := range sums {
			sp, ok := s.Figures[f.Name]
			switch {
			case !ok:
				b.WriteString(" — |")
			case sp.Runs == 1:
				fmt.Fprintf(&b, " %s (1 run) |", num(sp.Median))
			default:
				fmt.Fprintf(&b, " **%s** (%s–%s, %d runs) |", num(sp.Median), num(sp.Min), num(sp.Max), sp.Runs)
			}
		}
		fmt.Fprintf(&b, " %s | %s |\n", dash(f.Target), dash(f.Peer))
	}
	med := Medians(sums)
	fmt.Fprintf(&b, "\nSlope fitted to the medians: RSS **%.1f KiB** per added repository (target < 32), Go heap %.1f KiB; Flux about 138 KiB.\n",
		Slope(med, func(p Point) float64 { return p.RSSKiB }), Slope(med, func(p Point) float64 { return p.HeapKiB }))
	_, err := io.WriteString(w, b.String())
	return err
}

// num prints v with three significant digits, or as a whole number when
// it has more digits before the point.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func thousands(n int) string {
	if n < 1000 {
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%d,%03d", n/1000, n%1000)
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
