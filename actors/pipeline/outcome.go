package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// Kind is how a sync ended.
type Kind int

const (
	Unchanged        Kind = iota // nothing to do: the cluster holds this commit, or the repository is stalled on it
	Applied                      // every object applied, the rest pruned
	Failed                       // stopped short or some objects failed: retried with backoff
	Stalled                      // manifests do not parse at this commit: no retry until git, the spec or a person acts
	Unrecorded                   // applied, but the status write failed: retried, which writes it
	Unrelated                    // a new commit that changes no file this repository builds from: recorded only
	Waiting                      // spec.dependsOn not Ready: woken when it is
	Refused                      // spec.dependsOn makes a cycle: no retry until a spec changes
	DriftSkipped                 // drift check of a repository with drift: Ignore, or invalid manifests
	DriftInSync                  // the cluster matches git
	DriftCorrected               // drift found and corrected
	DriftDetected                // drift found and left (drift: Detect), or not all corrected
	DriftCheckFailed             // some objects could not be compared
	DriftFailed                  // the check itself failed: retried with backoff
	Abandoned                    // no slot came: shutdown began, or the sync was cancelled
)

// Outcome is how one sync ended; conclude turns it into every report.
type Outcome struct {
	Kind     Kind
	Reason   string   // of the condition and, unless the table says otherwise, of the Event
	Message  string   // one sentence for the status
	Problems []string // every problem, listed in the Event
	Err      error    // the cause, for Failed, Unrecorded and DriftFailed
	APIDown  bool     // Err says the Kubernetes API server was unreachable
	// Inventory replaces the status inventory when not nil.
	Inventory []v1alpha1.ObjectRef
	Result    *k8s.Result      // of the apply, for the metrics
	Drift     *k8s.DriftResult // of the drift check, for the metrics
}

// effect is what an outcome of one Kind does besides its status change.
type effect struct {
	metric      string // result label of alumiini_syncs_total
	eventType   string // Kubernetes Event type; "" emits none
	eventReason string // "" means the Outcome's Reason
	cdevents    []cdevents.Kind
	level       zapcore.Level
	// log is the log line's message; the Outcome's message is a field.
	log string
	// status changes the status; nil writes nothing.
	status func(s *syncState, o *Outcome, st *v1alpha1.GitRepositoryStatus)
}

// effects is the outcome table (docs/actors.md shows it).
var effects = map[Kind]effect{
	Unchanged:        {metric: "unchanged", log: "unchanged", level: zapcore.DebugLevel},
	Applied:          {metric: "success", log: "synced", eventType: corev1.EventTypeNormal, cdevents: []cdevents.Kind{cdevents.DeploymentFinished}, level: zapcore.InfoLevel, status: appliedStatus},
	Failed:           {metric: "failure", log: "sync failed", eventType: corev1.EventTypeWarning, cdevents: []cdevents.Kind{cdevents.DeploymentFailed}, level: zapcore.WarnLevel, status: failedStatus},
	Stalled:          {metric: "failure", log: "sync stalled", eventType: corev1.EventTypeWarning, cdevents: []cdevents.Kind{cdevents.DeploymentFailed}, level: zapcore.WarnLevel, status: failedStatus},
	Unrecorded:       {metric: "failure", log: "applied but not recorded", level: zapcore.WarnLevel},
	Unrelated:        {metric: "unrelated", log: "commit recorded without apply", level: zapcore.DebugLevel, status: unrelatedStatus},
	Waiting:          {metric: "waiting", log: "waiting for dependencies", level: zapcore.InfoLevel, status: waitingStatus},
	Refused:          {metric: "failure", log: "sync refused", eventType: corev1.EventTypeWarning, level: zapcore.WarnLevel, status: failedStatus},
	DriftSkipped:     {metric: "drift", log: "drift check skipped", level: zapcore.DebugLevel},
	DriftInSync:      {metric: "drift", log: "drift check", level: zapcore.DebugLevel, status: driftStatus(false)},
	DriftCorrected:   {metric: "drift", log: "drift check", eventType: corev1.EventTypeNormal, eventReason: "DriftCorrected", cdevents: []cdevents.Kind{cdevents.DriftDetected, cdevents.DriftCorrected}, level: zapcore.InfoLevel, status: driftStatus(false)},
	DriftDetected:    {metric: "drift", log: "drift check", eventType: corev1.EventTypeWarning, eventReason: "DriftDetected", cdevents: []cdevents.Kind{cdevents.DriftDetected}, level: zapcore.InfoLevel, status: driftStatus(true)},
	DriftCheckFailed: {metric: "drift", log: "drift check", eventType: corev1.EventTypeWarning, eventReason: "DriftCheckFailed", level: zapcore.InfoLevel, status: driftStatus(true)},
	DriftFailed:      {metric: "drift", log: "drift check failed", level: zapcore.WarnLevel},
	Abandoned:        {metric: "abandoned", log: "sync abandoned", level: zapcore.DebugLevel},
}

// errSyncFailed marks a sync that did not apply everything: the status
// already says why.
var errSyncFailed = errors.New("sync failed")

// failed is the Outcome of a step that stopped the sync on err.
func failed(reason string, err error) *Outcome {
	return &Outcome{Kind: Failed, Reason: reason, Message: sentence(err.Error()), Err: err}
}

// kubeFailed is failed for an error of a Kubernetes API call, which may say
// that the API server is unreachable.
func kubeFailed(reason string, err error) *Outcome {
	o := failed(reason, err)
	o.APIDown = apiUnreachable(err)
	return o
}

// conclude is the one place where an Outcome becomes the status write, the
// Kubernetes Event, the CDEvents, the log line and the metric. It returns
// the error the actor retries on.
func (s *syncState) conclude(ctx context.Context, o *Outcome) error {
	eff := effects[o.Kind]
	if eff.status != nil {
		werr := s.writeStatus(ctx, func(st *v1alpha1.GitRepositoryStatus) { eff.status(s, o, st) })
		if werr != nil && o.Kind == Applied {
			err := fmt.Errorf("applied commit %s but could not record it: %w", short(s.fetch.Commit), werr)
			return s.conclude(ctx, &Outcome{Kind: Unrecorded, Message: err.Error(), Err: err, APIDown: apiUnreachable(werr), Result: o.Result})
		}
	}
	if eff.eventType != "" {
		reason := eff.eventReason
		if reason == "" {
			reason = o.Reason
		}
		s.p.Recorder.Event(s.repo, eff.eventType, reason, eventMessage(o.Message, o.Problems))
	}
	s.emitOutcome(eff.cdevents, o)
	s.logOutcome(eff, o)
	s.measure(eff.metric, o)
	return s.outcomeError(o)
}

// emitOutcome sends the CDEvents of an outcome; a deployment finished or
// failed closes the run its started event opened. A failure before any
// apply started sends none.
func (s *syncState) emitOutcome(kinds []cdevents.Kind, o *Outcome) {
	for _, k := range kinds {
		ev := cdevents.Event{Kind: k, Message: o.Message}
		switch k {
		case cdevents.DeploymentFinished, cdevents.DeploymentFailed:
			if s.mem.RunID == "" && k == cdevents.DeploymentFailed {
				continue // no apply started
			}
			ev.RunID, s.mem.RunID = s.mem.RunID, ""
			ev.Failed = len(o.Problems)
			if o.Kind == Failed && ev.Failed == 0 {
				ev.Failed = 1
			}
		case cdevents.DriftDetected, cdevents.DriftCorrected:
			ev.Drifted = len(o.Drift.Drifted) + len(o.Drift.Missing)
		}
		if r := o.Result; r != nil {
			ev.Applied, ev.Pruned = len(r.Applied), len(r.Pruned)
		}
		s.emit(ev)
	}
}

func (s *syncState) logOutcome(eff effect, o *Outcome) {
	fields := []zap.Field{zap.String("message", o.Message), zap.String("reason", o.Reason), zap.Duration("took", time.Since(s.start))}
	if len(o.Problems) > 0 {
		fields = append(fields, zap.Strings("problems", o.Problems))
	}
	if o.Drift != nil {
		fields = append(fields, zap.Int("drifted", len(o.Drift.Drifted)+len(o.Drift.Missing)),
			zap.Int("corrected", len(o.Drift.Corrected)), zap.Int("failed", len(o.Drift.Failed)))
	}
	s.log.Log(eff.level, eff.log, fields...)
}

func (s *syncState) measure(result string, o *Outcome) {
	s.p.Metrics.Sync(string(s.req.Trigger), result, time.Since(s.start))
	if r := o.Result; r != nil && o.Kind != Unrecorded {
		s.p.Metrics.Objects(len(r.Applied), len(r.Pruned))
	}
	if d := o.Drift; d != nil {
		s.p.Metrics.Drift(len(d.Drifted)+len(d.Missing), len(d.Corrected))
	}
}

// outcomeError is the error the actor sees: nil, a retried failure (marked
// when the API server was unreachable), or a stall that is not retried.
func (s *syncState) outcomeError(o *Outcome) error {
	switch o.Kind {
	case Failed:
		if o.APIDown {
			return fmt.Errorf("%w: %w: %s", errSyncFailed, actors.ErrAPIUnreachable, o.Message)
		}
		return fmt.Errorf("%w: %s", errSyncFailed, o.Message)
	case Stalled, Refused:
		return fmt.Errorf("%w: %w: %s", errSyncFailed, actors.ErrStalled, o.Message)
	case Waiting:
		return fmt.Errorf("%w: %s", actors.ErrWaiting, o.Message)
	case Unrecorded, DriftFailed, Abandoned:
		if o.APIDown {
			return fmt.Errorf("%w: %w", actors.ErrAPIUnreachable, o.Err)
		}
		return o.Err
	}
	return nil
}

// apiUnreachable reports an error of a Kubernetes API call that says the
// API server could not be reached or could not answer, as opposed to an
// answer such as forbidden or invalid. Only errors of Kubernetes calls may
// be passed: a git host's network errors look the same.
func apiUnreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // our own cancellation or spec.timeout, not the API server
	}
	var urlErr *url.Error
	var netErr net.Error
	return errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)
}
