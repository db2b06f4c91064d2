// Package metrics holds the Prometheus collectors of the sync pipeline and
// the actor tree. The webhook and CDEvents packages register their own
// counters on the same registry; cmd/alumiini serves it on --metrics-addr.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the collectors of one controller process.
type Metrics struct {
	syncDuration  *prometheus.HistogramVec
	syncs         *prometheus.CounterVec
	fetchDuration *prometheus.HistogramVec
	stepDuration  *prometheus.SummaryVec
	applied       prometheus.Counter
	pruned        prometheus.Counter
	driftFound    prometheus.Counter
	driftFixed    prometheus.Counter
	actorsAlive   prometheus.Gauge
	restarts      prometheus.Counter
}

// New creates the collectors and registers them on reg (nil: not
// registered, which tests of other packages use).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alumiini_sync_duration_seconds",
			Help:    "Duration of syncs (fetch, parse, apply, prune, status) by result and trigger.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180},
		}, []string{"result", "trigger"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "alumiini_syncs_total",
			Help: "Syncs by result (success, failure, unchanged) and trigger.",
		}, []string{"result", "trigger"}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "alumiini_fetch_duration_seconds",
			Help:    "Duration of git fetches by outcome (fetched, unchanged, error).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"outcome"}),
		// Sums and counts only: a histogram per step and trigger would
		// multiply the series for a figure whose mean is what tells.
		stepDuration: prometheus.NewSummaryVec(prometheus.SummaryOpts{
			Name: "alumiini_sync_step_seconds",
			Help: "Time spent in each step of the sync pipeline, by trigger and step; queued is a webhook's wait for its repository's actor.",
		}, []string{"trigger", "step"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alumiini_objects_applied_total", Help: "Objects sent to the API server by server-side apply.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alumiini_objects_pruned_total", Help: "Objects deleted because they left git.",
		}),
		driftFound: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alumiini_drift_detected_total", Help: "Objects found to differ from git (or missing) by the drift check.",
		}),
		driftFixed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alumiini_drift_corrected_total", Help: "Drifted objects re-applied by the drift check.",
		}),
		actorsAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "alumiini_repository_actors", Help: "Repository actors alive.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "alumiini_actor_restarts_total", Help: "Repository actors restarted by the supervisor after a crash.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.syncDuration, m.syncs, m.fetchDuration, m.stepDuration, m.applied, m.pruned,
			m.driftFound, m.driftFixed, m.actorsAlive, m.restarts)
	}
	return m
}

// Sync records one finished sync.
func (m *Metrics) Sync(trigger, result string, d time.Duration) {
	m.syncDuration.WithLabelValues(result, trigger).Observe(d.Seconds())
	m.syncs.WithLabelValues(result, trigger).Inc()
}

// Fetch records one fetch.
func (m *Metrics) Fetch(outcome string, d time.Duration) {
	m.fetchDuration.WithLabelValues(outcome).Observe(d.Seconds())
}

// Step records the time one sync spent in one step.
func (m *Metrics) Step(trigger, step string, d time.Duration) {
	m.stepDuration.WithLabelValues(trigger, step).Observe(d.Seconds())
}

// Objects records objects applied and pruned by one sync.
func (m *Metrics) Objects(applied, pruned int) {
	m.applied.Add(float64(applied))
	m.pruned.Add(float64(pruned))
}

// Drift records one drift check.
func (m *Metrics) Drift(found, corrected int) {
	m.driftFound.Add(float64(found))
	m.driftFixed.Add(float64(corrected))
}

// ActorStarted, ActorStopped and ActorRestarted follow the actor tree.
func (m *Metrics) ActorStarted()   { m.actorsAlive.Inc() }
func (m *Metrics) ActorStopped()   { m.actorsAlive.Dec() }
func (m *Metrics) ActorRestarted() { m.restarts.Inc() }
