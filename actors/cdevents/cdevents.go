// Package cdevents tells other tools what the sync pipeline does: each step
// (a new commit fetched, an apply started, finished or failed, drift found or
// fixed) becomes a CDEvent (spec 0.4.1) sent as a CloudEvent over HTTP to
// the --cdevents-sink URL. Delivery is best effort and never slows a sync:
// Emit only enqueues, one goroutine sends in order and retries, and a full
// queue drops events (counted in alumiini_cdevents_dropped_total).
// docs/cdevents.md has the mapping table and the delivery semantics.
package cdevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Kind is what happened in the sync pipeline.
type Kind int

const (
	RepositoryFetched  Kind = iota + 1 // a fetch brought a new commit
	DeploymentStarted                  // an apply begins
	DeploymentFinished                 // an apply succeeded
	DeploymentFailed                   // an apply failed
	DriftDetected                      // the drift check found a difference
	DriftCorrected                     // the drift check fixed it
	Handover                           // a Deployment was handed to a KULTA Rollout
)

// Event is one occurrence for one GitRepository.
type Event struct {
	Kind                       Kind
	Namespace, Name            string // the GitRepository
	URL, Commit, Path, Trigger string
	Applied, Pruned, Failed    int // results: objects applied, pruned, failed
	Drifted                    int // drift events: objects that differed from git
	// RunID links a deployment's started event with its finished or failed
	// one (the pipelineRun id). The caller owns it; empty gets a fresh id.
	RunID   string
	Message string
	Time    time.Time // zero = now
}

// Config tunes the Emitter. Only Sink is needed; the rest have defaults.
type Config struct {
	Sink         string                // URL receiving the CloudEvents; "" disables emitting
	QueueSize    int                   // events waiting to be sent; default 1024
	MaxAttempts  int                   // delivery attempts per event; default 5
	RetryBackoff time.Duration         // first retry delay, doubled up to 30s; default 500ms
	Source       string                // CDEvents/CloudEvents source; default "/alumiini"
	Metrics      prometheus.Registerer // optional
	Logger       *zap.Logger           // optional
}

// Defaults of Config.
const (
	DefaultQueueSize    = 1024
	DefaultMaxAttempts  = 5
	DefaultRetryBackoff = 500 * time.Millisecond
	DefaultSource       = "/alumiini"

	maxBackoff     = 30 * time.Second
	attemptTimeout = 10 * time.Second
	contentType    = "application/cdevents+json" // the CDEvents CloudEvents binding
)

// Emitter sends events to the sink. Its methods are safe for concurrent use,
// and on a nil or disabled Emitter they do nothing.
type Emitter struct {
	cfg    Config
	sink   string // cfg.Sink with any password masked, for logs and errors
	log    *zap.Logger
	client cloudevents.Client
	cancel context.CancelFunc // aborts sending when Close runs out of time
	done   chan struct{}      // closed when the sender has finished

	mu     sync.RWMutex // guards closed against Emit sending on a closed queue
	closed bool
	queue  chan cloudevents.Event

	sent, dropped, failed prometheus.Counter
}

// New validates cfg and starts the sender. With an empty Sink it returns an
// Emitter whose Emit does nothing.
func New(cfg Config) (*Emitter, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Sink == "" {
		return &Emitter{}, nil
	}
	sink, err := url.Parse(cfg.Sink)
	if err != nil || (sink.Scheme != "http" && sink.Scheme != "https") || sink.Host == "" {
		return nil, errors.New("cdevents sink: want an absolute http:// or https:// URL, for example http://collector.observability:8080/cdevents")
	}
	cfg = withDefaults(cfg)
	if u, err := url.Parse(cfg.Source); err != nil || u.String() == "" {
		return nil, fmt.Errorf("cdevents source %q: want a URI reference such as /alumiini/<namespace>/<pod>", cfg.Source)
	}
	client, err := cloudevents.NewClientHTTP(cehttp.WithTarget(cfg.Sink), cehttp.WithClient(http.Client{}))
	if err != nil {
		return nil, fmt.Errorf("cdevents client for %s: %w", sink.Redacted(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Emitter{cfg: cfg, sink: sink.Redacted(), log: cfg.Logger.Named("cdevents"), client: client, cancel: cancel,
		done: make(chan struct{}), queue: make(chan cloudevents.Event, cfg.QueueSize)}
	e.sent = counter(cfg.Metrics, e.log, "alumiini_cdevents_sent_total", "CDEvents accepted by the sink.")
	e.dropped = counter(cfg.Metrics, e.log, "alumiini_cdevents_dropped_total", "CDEvents dropped unsent because the queue was full or the emitter closed.")
	e.failed = counter(cfg.Metrics, e.log, "alumiini_cdevents_failed_total", "CDEvents given up on after the last delivery attempt.")
	go e.deliverAll(ctx)
	return e, nil
}

func withDefaults(cfg Config) Config {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	if cfg.Source == "" {
		cfg.Source = DefaultSource
	}
	return cfg
}

// counter registers a counter, reusing one already registered under the
// same name (a second Emitter on the same registry).
func counter(reg prometheus.Registerer, log *zap.Logger, name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		if existing, ok := dup.ExistingCollector.(prometheus.Counter); ok {
			return existing
		}
	}
	if err != nil {
		log.Warn("counter not registered", zap.String("name", name), zap.Error(err))
	}
	return c
}

// Emit queues ev for sending and returns at once. When the queue is full
// the event is dropped and counted.
func (e *Emitter) Emit(ev Event) {
	if e == nil || e.queue == nil {
		return
	}
	ce, err := e.cloudEvent(ev)
	if err != nil {
		e.failed.Inc()
		e.log.Error("CDEvent not built", zap.Error(err))
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		e.dropped.Inc()
		return
	}
	select {
	case e.queue <- ce:
	default:
		e.dropped.Inc()
		e.log.Debug("CDEvents queue full, event dropped", zap.String("type", ce.Type()), zap.String("subject", ce.Subject()))
	}
}

// cloudEvent wraps the CDEvent of ev in a CloudEvent as the CDEvents
// binding says: the CloudEvent id, source, type, subject and time repeat
// the CDEvent's, and the data is the whole CDEvent.
func (e *Emitter) cloudEvent(ev Event) (cloudevents.Event, error) {
	id, when := uuid.NewString(), ev.Time
	if when.IsZero() {
		when = time.Now()
	}
	cd, err := build(ev, id, e.cfg.Source, runID(ev), when)
	if err != nil {
		return cloudevents.Event{}, err
	}
	ce := cloudevents.NewEvent()
	ce.SetID(id)
	ce.SetSource(cd.Context.Source)
	ce.SetType(cd.Context.Type)
	ce.SetSubject(cd.Subject.ID)
	ce.SetTime(when)
	data, err := json.Marshal(cd)
	if err != nil {
		return cloudevents.Event{}, fmt.Errorf("encode %s: %w", cd.Context.Type, err)
	}
	if err := ce.SetData(contentType, data); err != nil {
		return cloudevents.Event{}, fmt.Errorf("data of %s: %w", cd.Context.Type, err)
	}
	return ce, nil
}

// runID is the pipelineRun id of a deployment event: the caller's, which
// links a started event with its finished or failed one, or a fresh one
// (a result whose start was not seen, as after a restart mid-apply).
func runID(ev Event) string {
	switch ev.Kind {
	case DeploymentStarted, DeploymentFinished, DeploymentFailed:
		if ev.RunID != "" {
			return ev.RunID
		}
		return uuid.NewString()
	}
	return ""
}

// Close stops accepting events and sends what is queued. When ctx ends
// first it abandons the rest, counts it as dropped and returns an error.
func (e *Emitter) Close(ctx context.Context) error {
	if e == nil || e.queue == nil {
		return nil
	}
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.queue)
	}
	e.mu.Unlock()
	select {
	case <-e.done:
		e.cancel()
		return nil
	case <-ctx.Done():
		e.cancel()
		<-e.done // quick: with the context cancelled nothing waits on the network
		return fmt.Errorf("cdevents: draining the queue to %s: %w", e.sink, ctx.Err())
	}
}

// deliverAll is the one sender: it delivers events in the order they were queued.
func (e *Emitter) deliverAll(ctx context.Context) {
	defer close(e.done)
	for ce := range e.queue {
		if ctx.Err() != nil {
			e.dropped.Inc()
			continue
		}
		e.deliver(ctx, ce)
	}
}

// deliver sends one event, retrying with exponential backoff while the
// failure may pass (network errors, 408, 429, 5xx).
func (e *Emitter) deliver(ctx context.Context, ce cloudevents.Event) {
	delay := e.cfg.RetryBackoff
	for attempt := 1; ; attempt++ {
		err := e.send(ctx, ce)
		if err == nil {
			e.sent.Inc()
			return
		}
		if attempt >= e.cfg.MaxAttempts || !retriable(err) || !wait(ctx, delay) {
			e.failed.Inc()
			e.log.Warn("CDEvent not delivered", zap.String("type", ce.Type()), zap.String("subject", ce.Subject()),
				zap.String("sink", e.sink), zap.Int("attempts", attempt), zap.Error(err))
			return
		}
		delay = min(2*delay, maxBackoff)
	}
}

// errPanicked is a send that panicked: not retried, as it would again.
var errPanicked = errors.New("the CloudEvents client panicked")

// send makes one attempt. A panic in the CloudEvents client, which reads a
// third party's reply, fails this event and not the process: the sender
// goes on with the next event.
func (e *Emitter) send(ctx context.Context, ce cloudevents.Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("panic while sending a CDEvent", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("%w: %v", errPanicked, r)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	if res := e.client.Send(ctx, ce); !cloudevents.IsACK(res) {
		return res
	}
	return nil
}

// retriable tells failures that may pass from those the sink will repeat.
func retriable(err error) bool {
	if errors.Is(err, errPanicked) {
		return false
	}
	var res *cehttp.Result
	if !errors.As(err, &res) {
		return true // no HTTP answer: connection refused, timeout, reset
	}
	code := res.StatusCode
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// wait sleeps for d unless ctx ends first; it reports whether it slept.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
