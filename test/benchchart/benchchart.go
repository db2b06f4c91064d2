// Package benchchart holds the figures of the scale benchmark (test/scale_test.go)
// and draws them: the harness writes what it measured as JSON and as PNG
// charts, so that docs/benchmarks.md shows charts made from its own results.
package benchchart

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Point is what the harness measured with Repos idle GitRepositories.
type Point struct {
	Repos                  int
	RSSKiB                 float64 // settled (after forced GC cycles)
	HeapKiB                float64 // Go heap in use, settled
	FirstSyncSeconds       float64 // from the last create until the added repositories were Synced
	BaselineSeconds        float64 // the same server-side applies issued directly
	FirstSyncRatio         float64
	ControllerCPUPercent   float64 // of one core, over the quiet window
	ControlPlaneCPUPercent float64 // kube-apiserver + etcd, of one core
	RequestsPerMinute      map[string]float64
	PushP50Ms, PushP99Ms   float64 // webhook POST → changed object seen by a watch
	WebhookP50Ms           float64 // webhook reply time
	WebhookP99Ms           float64
}

// Slope fits y = a + b·Repos by least squares over the points and returns
// b: the cost of one more repository. It is 0 with fewer than two points.
func Slope(points []Point, y func(Point) float64) float64 {
	n := float64(len(points))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for _, p := range points {
		x := float64(p.Repos)
		sx, sy, sxx, sxy = sx+x, sy+y(p), sxx+x*x, sxy+x*y(p)
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// Draw writes memory.png (RSS and heap against repositories) and
// latency.png (push → applied p50 and p99 against idle repositories) into
// dir.
func Draw(dir string, points []Point) error {
	mem := func(f func(Point) float64) plotter.XYs { return series(points, f) }
	if err := lines(filepath.Join(dir, "memory.png"), "Memory with idle GitRepositories (20 ConfigMaps each)",
		"MiB", "RSS", mem(func(p Point) float64 { return p.RSSKiB / 1024 }),
		"Go heap in use", mem(func(p Point) float64 { return p.HeapKiB / 1024 })); err != nil {
		return err
	}
	return lines(filepath.Join(dir, "latency.png"), "Push → applied while the others sit idle",
		"ms", "p50", mem(func(p Point) float64 { return p.PushP50Ms }),
		"p99", mem(func(p Point) float64 { return p.PushP99Ms }))
}

func series(points []Point, y func(Point) float64) plotter.XYs {
	xys := make(plotter.XYs, len(points))
	for i, p := range points {
		xys[i].X, xys[i].Y = float64(p.Repos), y(p)
	}
	return xys
}

// lines draws named series (name, XYs, name, XYs, …) against repositories.
func lines(path, title, unit string, named ...any) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "idle GitRepositories (log scale)"
	p.X.Scale = plot.LogScale{} // the points are 100, 1,000, 10,000
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = unit
	p.Y.Min = 0
	if err := plotutil.AddLinePoints(p, named...); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}
