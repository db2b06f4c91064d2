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
	Interval, Reconcile    string  // spec.interval and spec.reconcileInterval of the idle repositories
	RSSKiB                 float64 // settled (after forced GC cycles)
	HeapKiB                float64 // Go heap in use, settled
	LiveKiB                float64 // the heap's live objects at the last GC, settled
	FirstSyncSeconds       float64 // from the last create until the added repositories were Synced
	BaselineSeconds        float64 // the same server-side applies issued directly
	FirstSyncRatio         float64
	ControllerCPUPercent   float64 // of one core, over the quiet window
	ControlPlaneCPUPercent float64 // kube-apiserver + etcd, of one core
	EtcdCPUPercent         float64 // etcd's part of ControlPlaneCPUPercent
	// ControlPlaneIdleCPUPercent is kube-apiserver + etcd with the same
	// objects stored and the controller paused: the control plane's own
	// cost, which ALUMIINI does not add to.
	ControlPlaneIdleCPUPercent float64
	RequestsPerMinute          map[string]float64
	// WritesPerMinute are the writes among them, by verb and resource
	// ("APPLY gitrepositories/status"): a quiet controller makes none.
	WritesPerMinute map[string]float64 `json:",omitempty"`
	// StatusChanges says what those writes changed: the number of
	// repositories whose status differs after the window from before it,
	// by what differs (a field, or a condition's move).
	StatusChanges map[string]int `json:",omitempty"`
	// Timer work in the quiet window: drift checks and polls per minute
	// (the controller's alumiini_syncs_total).
	DriftChecksPerMinute, PollsPerMinute float64
	PushP50Ms, PushP99Ms                 float64 // webhook POST → changed object seen by a watch
	WebhookP50Ms                         float64 // webhook reply time
	WebhookP99Ms                         float64
	// Where a push's time went, means over the pushes: its git fetch, and
	// its whole sync (fetch, status writes, apply).
	PushFetchMeanMs, PushSyncMeanMs float64
	// PushStepMeanMs is the mean time of each pipeline step over the
	// pushes (the controller's alumiini_sync_step_seconds); queued is the
	// wait from the webhook to the sync's start.
	PushStepMeanMs map[string]float64 `json:",omitempty"`
	// PushGCs are the controller's GC cycles during the pushes, and
	// PushAllocKiB what it allocated per push: a push that meets a GC
	// cycle of a large heap pays for its mark assists.
	PushGCs      float64
	PushAllocKiB float64
	PushMs       []float64 `json:",omitempty"` // each push → applied, in order
	// PushFetchMs is each push's git fetch, in the order of PushMs: what
	// the git server's share of each push was.
	PushFetchMs []float64 `json:",omitempty"`
	// Beside each push, in the same order: the longest of its requests as
	// the git server timed them (the git processes included); the machine's
	// CPUs busy on average (in CPUs); and how long some runnable task on the
	// machine waited for a CPU (Linux pressure stall information, zero where
	// the kernel does not report it). A slow fetch with a server time near
	// it and a long wait was queued behind other work for a CPU. (The
	// kernel counts busy time in 10 ms ticks: one push's figure is coarse.)
	PushGitServerMs []float64 `json:",omitempty"`
	PushBusyCores   []float64 `json:",omitempty"`
	PushCPUWaitMs   []float64 `json:",omitempty"`
	// FirstSyncWork is what the first sync cost, from the first create of
	// a GitRepository (with its namespace) until all were Synced, and
	// BaselineWork what the direct applies cost (with their namespaces'
	// creates): where the first sync ratio comes from.
	FirstSyncWork, BaselineWork Work
	// FirstSyncStepMeanMs is the mean time of each pipeline step of the
	// first syncs: whether they waited for git, a slot or the API server.
	FirstSyncStepMeanMs map[string]float64 `json:",omitempty"`
	// Events are the Kubernetes Events in the benchmark's namespace when
	// the point ended, by type and reason, and the latest message of each:
	// those of the last hour (the API server's --event-ttl).
	Events        map[string]int    `json:",omitempty"`
	EventMessages map[string]string `json:",omitempty"`
}

// Work is what the controller and the control plane spent over an
// interval of a benchmark.
type Work struct {
	// ControllerCPUSeconds is not read for the baseline. The controller
	// runs on through it (the earlier repositories' polls and drift
	// checks), and its requests are counted in the baseline's, as the
	// earlier repositories' are in a first sync's.
	ControllerCPUSeconds float64 `json:",omitempty"`
	PlaneCPUSeconds      float64 // kube-apiserver + etcd
	// RequestsPerRepo are the API server's requests by verb and resource
	// ("APPLY configmaps", "APPLY gitrepositories/status"), divided by the
	// repositories the interval added.
	RequestsPerRepo map[string]float64 `json:",omitempty"`
}

// Peer is a figure of the controller users would pick instead, measured
// on a like machine with the same workload, drawn beside ours.
type Peer struct {
	Repos     int
	RSSMiB    float64
	PushP50Ms float64 // push → applied with the others idle
}

// Flux is Flux v2.9.4 (source- and kustomize-controller) as measured for
// issue 18 on a 2-core machine, N repositories × 20 ConfigMaps, interval
// 1m: RSS 662–678 KiB per repository at 200 and 247–254 KiB at 1,000
// (the middles are drawn), push → applied p50 0.83–1.82 s at 200 and 66 s
// at 1,000.
func Flux() []Peer {
	return []Peer{
		{Repos: 200, RSSMiB: 200 * 670.0 / 1024, PushP50Ms: (830 + 1820) / 2},
		{Repos: 1000, RSSMiB: 1000 * 250.5 / 1024, PushP50Ms: 66000},
	}
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
// dir, with the peer's figures beside ours.
func Draw(dir string, points []Point, peer []Peer) error {
	mem := func(f func(Point) float64) plotter.XYs { return series(points, f) }
	flux := func(f func(Peer) float64) plotter.XYs {
		xys := make(plotter.XYs, len(peer))
		for i, p := range peer {
			xys[i].X, xys[i].Y = float64(p.Repos), f(p)
		}
		return xys
	}
	if err := lines(filepath.Join(dir, "memory.png"), "Memory with idle GitRepositories (20 ConfigMaps each)",
		"MiB", plot.LinearScale{}, "ALUMIINI RSS", mem(func(p Point) float64 { return p.RSSKiB / 1024 }),
		"ALUMIINI Go heap in use", mem(func(p Point) float64 { return p.HeapKiB / 1024 }),
		"Flux v2.9.4 RSS", flux(func(p Peer) float64 { return p.RSSMiB })); err != nil {
		return err
	}
	return lines(filepath.Join(dir, "latency.png"), "Push → applied while the others sit idle",
		"ms (log scale)", plot.LogScale{}, "ALUMIINI p50", mem(func(p Point) float64 { return p.PushP50Ms }),
		"ALUMIINI p99", mem(func(p Point) float64 { return p.PushP99Ms }),
		"Flux v2.9.4 p50", flux(func(p Peer) float64 { return p.PushP50Ms }))
}

// series is y against repositories, leaving out the points where y is
// zero: not measured (a summary's median of no run), and not drawable on
// a log scale.
func series(points []Point, y func(Point) float64) plotter.XYs {
	var xys plotter.XYs
	for _, p := range points {
		if v := y(p); v != 0 {
			xys = append(xys, plotter.XY{X: float64(p.Repos), Y: v})
		}
	}
	return xys
}

// lines draws named series (name, XYs, name, XYs, …) against repositories.
func lines(path, title, unit string, yScale plot.Normalizer, named ...any) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "idle GitRepositories (log scale)"
	p.X.Scale = plot.LogScale{} // the points are 100, 1,000, 10,000
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = unit
	p.Y.Scale = yScale
	if _, log := yScale.(plot.LogScale); log {
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		p.Y.Min = 0
	}
	p.Legend.Top, p.Legend.Left = true, true
	if err := plotutil.AddLinePoints(p, named...); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}
