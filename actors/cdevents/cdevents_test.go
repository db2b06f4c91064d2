package cdevents

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/prometheus/client_golang/prometheus"
)

// delivery is one event as the receiver got it.
type delivery struct {
	header http.Header
	ceType string
	ceID   string
	source string
	subj   string
	time   time.Time
	data   map[string]any
}

// receiver is a real CloudEvents HTTP endpoint. It answers 503 to the first
// failFirst requests, then decodes each request with the CloudEvents SDK.
type receiver struct {
	url      string
	got      chan delivery
	requests atomic.Int32
}

func newReceiver(t *testing.T, failFirst int32) *receiver {
	t.Helper()
	r := &receiver{got: make(chan delivery, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.requests.Add(1) <= failFirst {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		ev, err := cehttp.NewEventFromHTTPRequest(req)
		if err != nil {
			t.Errorf("receiver: not a CloudEvent: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("receiver: invalid CloudEvent: %v", err)
		}
		d := delivery{header: req.Header.Clone(), ceType: ev.Type(), ceID: ev.ID(), source: ev.Source(),
			subj: ev.Subject(), time: ev.Time()}
		if err := ev.DataAs(&d.data); err != nil {
			t.Errorf("receiver: data of %s is not JSON: %v", ev.Type(), err)
		}
		r.got <- d
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *receiver) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-r.got:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no event arrived within 10s")
		return delivery{}
	}
}

func newEmitter(t *testing.T, cfg Config) (*Emitter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e, reg
}

// metric reads a counter from the registry the Emitter registered on.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func closeWithin(t *testing.T, e *Emitter, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return e.Close(ctx)
}

func TestSyncEventsArriveInOrderAndFollowTheSpec(t *testing.T) {
	r := newReceiver(t, 0)
	e, reg := newEmitter(t, Config{Sink: r.url, Source: "/alumiini/system/alumiini-0"})
	base := Event{Namespace: "team-a", Name: "shop", URL: "https://git.example/shop.git",
		Commit: "3f2c1d9e8b7a", Path: "deploy/prod", Trigger: "webhook"}
	sync := []struct {
		kind     Kind
		wantType string
	}{
		{RepositoryFetched, "dev.cdeventsx.alumiini-repository.fetched.0.1.0"},
		{DeploymentStarted, "dev.cdevents.pipelinerun.started.0.2.0"},
		{DeploymentFinished, "dev.cdevents.pipelinerun.finished.0.2.0"},
		{DriftDetected, "dev.cdeventsx.alumiini-drift.detected.0.1.0"},
		{DriftCorrected, "dev.cdeventsx.alumiini-drift.corrected.0.1.0"},
		{DeploymentStarted, "dev.cdevents.pipelinerun.started.0.2.0"},
		{DeploymentFailed, "dev.cdevents.pipelinerun.finished.0.2.0"},
		{Handover, "dev.cdeventsx.alumiini-rollout.handedover.0.1.0"},
	}
	for i, s := range sync {
		ev := base
		ev.Kind, ev.Applied, ev.Message = s.kind, i, "step "+s.wantType
		ev.RunID = "run-a" // the caller (the repository's Memory) owns the run id
		if i > 4 {
			ev.RunID = "run-b"
		}
		e.Emit(ev)
	}

	ids := map[string]bool{}
	var runSubjects []string
	for i, s := range sync {
		d := r.next(t)
		if d.ceType != s.wantType {
			t.Fatalf("event %d: ce-type %q, want %q", i, d.ceType, s.wantType)
		}
		if got := d.header.Get("Ce-Type"); got != s.wantType {
			t.Errorf("event %d: not binary mode: Ce-Type header %q", i, got)
		}
		if got := d.header.Get("Content-Type"); got != contentType {
			t.Errorf("event %d: Content-Type %q, want %q", i, got, contentType)
		}
		checkSchema(t, d)
		if ids[d.ceID] {
			t.Errorf("event %d: id %s repeats", i, d.ceID)
		}
		ids[d.ceID] = true
		if d.source != "/alumiini/system/alumiini-0" {
			t.Errorf("event %d: source %q", i, d.source)
		}
		sub := d.data["subject"].(map[string]any)
		info := sub["content"].(map[string]any)
		if strings.HasPrefix(s.wantType, "dev.cdevents.") {
			info = d.data["customData"].(map[string]any)
			runSubjects = append(runSubjects, sub["id"].(string))
		}
		for key, want := range map[string]any{"namespace": "team-a", "name": "shop", "url": base.URL,
			"commit": base.Commit, "path": base.Path, "trigger": "webhook", "message": "step " + s.wantType} {
			if info[key] != want {
				t.Errorf("event %d (%s): %s = %v, want %v", i, s.wantType, key, info[key], want)
			}
		}
		_, hasCounts := info["applied"]
		wantCounts := slices.Contains([]Kind{DeploymentFinished, DeploymentFailed, DriftDetected, DriftCorrected}, s.kind)
		if hasCounts != wantCounts || (wantCounts && info["applied"] != float64(i)) {
			t.Errorf("event %d (%s): applied = %v, want counts %v", i, s.wantType, info["applied"], wantCounts)
		}
	}
	// A start and its result share the pipelineRun; the next run is another.
	if runSubjects[0] != runSubjects[1] || runSubjects[2] != runSubjects[3] || runSubjects[0] == runSubjects[2] {
		t.Errorf("pipelineRun subjects %v: want pairs [a a b b]", runSubjects)
	}
	if err := closeWithin(t, e, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, reg, "alumiini_cdevents_sent_total"); got != float64(len(sync)) {
		t.Errorf("sent_total = %v, want %d", got, len(sync))
	}
}

// checkSchema checks a delivery against the CDEvents v0.4.1 JSON schemas in
// github.com/cdevents/spec: schemas/pipelinerunstarted.json,
// schemas/pipelinerunfinished.json and custom/schema.json (the dev.cdeventsx
// schema). The field lists and patterns below are taken from them.
func checkSchema(t *testing.T, d delivery) {
	t.Helper()
	var (
		// every schema: top level, context and subject ("additionalProperties": false)
		topRequired     = []string{"context", "subject"}
		topAllowed      = []string{"context", "subject", "customData", "customDataContentType"}
		contextRequired = []string{"version", "id", "source", "type", "timestamp"}
		contextAllowed  = []string{"version", "id", "source", "type", "timestamp", "schemaUri", "chainId", "links"}
		subjectRequired = []string{"id", "type", "content"}
		subjectAllowed  = []string{"id", "source", "type", "content"}
		// pipelinerunstarted.json / pipelinerunfinished.json: subject.type enum and content
		pipelineRunStartedRequired = []string{"pipelineName", "url"}
		pipelineRunAllowed         = []string{"pipelineName", "url", "outcome", "errors"}
		// custom/schema.json: context.type and subject.type patterns
		customType    = regexp.MustCompile(`^dev\.cdeventsx\.[a-zA-Z0-9]+-[a-zA-Z]+\.[a-zA-Z]+\.[0-9]\.[0-9]\.[0-9]$`)
		customSubject = regexp.MustCompile(`^[a-zA-Z0-9]+-[a-zA-Z]+$`)
	)
	shape := func(what string, obj map[string]any, required, allowed []string) {
		for _, k := range required {
			if v, ok := obj[k]; !ok || v == "" {
				t.Errorf("%s: %s: required field %q missing or empty", d.ceType, what, k)
			}
		}
		for k := range obj {
			if !slices.Contains(allowed, k) {
				t.Errorf("%s: %s: field %q not allowed by the schema", d.ceType, what, k)
			}
		}
	}
	shape("event", d.data, topRequired, topAllowed)
	ctx, _ := d.data["context"].(map[string]any)
	sub, _ := d.data["subject"].(map[string]any)
	shape("context", ctx, contextRequired, contextAllowed)
	shape("subject", sub, subjectRequired, subjectAllowed)
	content, _ := sub["content"].(map[string]any)

	if ctx["version"] != "0.4.1" || ctx["type"] != d.ceType || ctx["id"] != d.ceID || ctx["source"] != d.source {
		t.Errorf("%s: context %v does not match the CloudEvent (id %s, source %s)", d.ceType, ctx, d.ceID, d.source)
	}
	ts, err := time.Parse(time.RFC3339Nano, ctx["timestamp"].(string))
	if err != nil || !ts.Equal(d.time) {
		t.Errorf("%s: timestamp %v is not RFC 3339 or differs from ce-time %v (%v)", d.ceType, ctx["timestamp"], d.time, err)
	}
	if sub["id"] != d.subj {
		t.Errorf("%s: ce-subject %q, want subject.id %v", d.ceType, d.subj, sub["id"])
	}
	switch d.ceType {
	case "dev.cdevents.pipelinerun.started.0.2.0":
		shape("content", content, pipelineRunStartedRequired, pipelineRunAllowed)
	case "dev.cdevents.pipelinerun.finished.0.2.0":
		shape("content", content, nil, pipelineRunAllowed)
		if o := content["outcome"]; o != "success" && o != "failure" {
			t.Errorf("%s: outcome %v", d.ceType, o)
		}
	default:
		if !customType.MatchString(d.ceType) {
			t.Errorf("custom type %q does not match %s", d.ceType, customType)
		}
		if s, _ := sub["type"].(string); !customSubject.MatchString(s) {
			t.Errorf("%s: subject.type %q does not match %s", d.ceType, s, customSubject)
		}
		return
	}
	if sub["type"] != "pipelineRun" {
		t.Errorf("%s: subject.type %v, want pipelineRun", d.ceType, sub["type"])
	}
}

func TestRetriesUntilTheReceiverAccepts(t *testing.T) {
	r := newReceiver(t, 2)
	e, reg := newEmitter(t, Config{Sink: r.url, MaxAttempts: 4, RetryBackoff: 5 * time.Millisecond})
	e.Emit(Event{Kind: DeploymentFinished, Namespace: "ns", Name: "app"})
	if d := r.next(t); d.ceType != typePipelineRunFinished {
		t.Fatalf("got %s", d.ceType)
	}
	if err := closeWithin(t, e, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := r.requests.Load(); got != 3 {
		t.Errorf("receiver saw %d requests, want 2 refused + 1 accepted", got)
	}
	if sent, failed := metric(t, reg, "alumiini_cdevents_sent_total"), metric(t, reg, "alumiini_cdevents_failed_total"); sent != 1 || failed != 0 {
		t.Errorf("sent %v failed %v, want 1 and 0", sent, failed)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	r := newReceiver(t, 1000)
	e, reg := newEmitter(t, Config{Sink: r.url, MaxAttempts: 3, RetryBackoff: time.Millisecond})
	e.Emit(Event{Kind: DriftDetected, Namespace: "ns", Name: "app"})
	if err := closeWithin(t, e, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := r.requests.Load(); got != 3 {
		t.Errorf("receiver saw %d requests, want MaxAttempts = 3", got)
	}
	if got := metric(t, reg, "alumiini_cdevents_failed_total"); got != 1 {
		t.Errorf("failed_total = %v, want 1", got)
	}
}

func TestRejectedEventIsNotRetried(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		http.Error(w, "unknown event type", http.StatusBadRequest)
	}))
	defer srv.Close()
	e, reg := newEmitter(t, Config{Sink: srv.URL, MaxAttempts: 5, RetryBackoff: time.Millisecond})
	e.Emit(Event{Kind: Handover, Namespace: "ns", Name: "app"})
	if err := closeWithin(t, e, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if requests.Load() != 1 || metric(t, reg, "alumiini_cdevents_failed_total") != 1 {
		t.Errorf("a 400 was retried (%d requests) or not counted as failed", requests.Load())
	}
}

func TestDownReceiverNeitherBlocksNorGrowsTheQueue(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there any more: connection refused
	const queue, emits = 2, 50
	// A long backoff keeps the sender stuck on its first event.
	e, reg := newEmitter(t, Config{Sink: down.URL, QueueSize: queue, MaxAttempts: 3, RetryBackoff: time.Hour})

	emitted := make(chan struct{})
	go func() {
		for range emits {
			e.Emit(Event{Kind: RepositoryFetched, Namespace: "ns", Name: "app"})
		}
		close(emitted)
	}()
	select {
	case <-emitted:
	case <-time.After(5 * time.Second):
		t.Fatal("Emit blocked while the sink was down")
	}
	// At most the queue and the event in the sender's hands were kept.
	if got := metric(t, reg, "alumiini_cdevents_dropped_total"); got < emits-queue-1 {
		t.Errorf("dropped_total = %v, want at least %d", got, emits-queue-1)
	}

	err := closeWithin(t, e, 100*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with the sink down: %v, want a deadline error", err)
	}
	sent, failed, dropped := metric(t, reg, "alumiini_cdevents_sent_total"),
		metric(t, reg, "alumiini_cdevents_failed_total"), metric(t, reg, "alumiini_cdevents_dropped_total")
	if sent != 0 || sent+failed+dropped != emits {
		t.Errorf("sent %v + failed %v + dropped %v, want 0 sent and %d in all", sent, failed, dropped, emits)
	}
	e.Emit(Event{Kind: RepositoryFetched}) // after Close: dropped, not a panic
}

func TestCloseDrainsTheQueue(t *testing.T) {
	r := newReceiver(t, 0)
	e, reg := newEmitter(t, Config{Sink: r.url})
	const n = 40
	for i := range n {
		e.Emit(Event{Kind: DriftCorrected, Namespace: "ns", Name: "app", Applied: i})
	}
	if err := closeWithin(t, e, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if len(r.got) != n || metric(t, reg, "alumiini_cdevents_sent_total") != n {
		t.Fatalf("after Close the receiver has %d events, want %d", len(r.got), n)
	}
	for i := range n {
		if d := <-r.got; d.data["subject"].(map[string]any)["content"].(map[string]any)["applied"] != float64(i) {
			t.Fatalf("event %d out of order", i)
		}
	}
	if err := e.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDisabledEmitterDoesNothing(t *testing.T) {
	e, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Kind: DeploymentStarted, Namespace: "ns", Name: "app"})
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var none *Emitter
	none.Emit(Event{Kind: DeploymentStarted})
	if err := none.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Sink: "collector:8080"},
		{Sink: "ftp://collector/events"},
		{Sink: "/events"},
		{Sink: "http://"},
		{Sink: "http://collector", Source: "://bad"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
}

func TestEventJSONIsStable(t *testing.T) {
	cd, err := build(Event{Kind: DeploymentFailed, Namespace: "ns", Name: "app", Commit: "abc", Failed: 2, Message: "apply Deployment ns/web: field is immutable"},
		"id-1", "/alumiini", "run-1", time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(cd)
	want := `{"context":{"version":"0.4.1","id":"id-1","source":"/alumiini","type":"dev.cdevents.pipelinerun.finished.0.2.0","timestamp":"2025-01-02T03:04:05Z"},` +
		`"subject":{"id":"ns/app/run-1","type":"pipelineRun","content":{"pipelineName":"ns/app","url":"/apis/alumiini.false.systems/v1alpha1/namespaces/ns/gitrepositories/app","outcome":"failure","errors":"apply Deployment ns/web: field is immutable"}},` +
		`"customData":{"namespace":"ns","name":"app","commit":"abc","applied":0,"pruned":0,"failed":2,"drifted":0,"message":"apply Deployment ns/web: field is immutable"}}`
	if string(got) != want {
		t.Errorf("JSON\n got %s\nwant %s", got, want)
	}
	if _, err := build(Event{Kind: Kind(99)}, "id", "/alumiini", "", time.Now()); err == nil {
		t.Error("unknown kind accepted")
	}
}

// panicOnce is a CloudEvents client whose first Send panics.
type panicOnce struct {
	cloudevents.Client
	panicked atomic.Bool
}

func (p *panicOnce) Send(ctx context.Context, ev cloudevents.Event) protocol.Result {
	if !p.panicked.Swap(true) {
		panic("a reply the client could not handle")
	}
	return p.Client.Send(ctx, ev)
}

// TestPanicInTheClientFailsOnlyThatEvent: a panic while sending counts
// that event as failed, once, and the sender delivers the next one.
func TestPanicInTheClientFailsOnlyThatEvent(t *testing.T) {
	r := newReceiver(t, 0)
	e, reg := newEmitter(t, Config{Sink: r.url, MaxAttempts: 3, RetryBackoff: time.Millisecond})
	client := &panicOnce{Client: e.client}
	e.client = client // before the first Emit: the sender reads it after the queue hands it an event
	e.Emit(Event{Kind: DriftDetected, Namespace: "ns", Name: "first"})
	e.Emit(Event{Kind: DriftDetected, Namespace: "ns", Name: "second"})
	if d := r.next(t); !strings.Contains(d.subj, "second") {
		t.Fatalf("delivered %q, want the second event", d.subj)
	}
	if err := closeWithin(t, e, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !client.panicked.Load() {
		t.Fatal("the client never panicked: the test proves nothing")
	}
	if sent, failed := metric(t, reg, "alumiini_cdevents_sent_total"), metric(t, reg, "alumiini_cdevents_failed_total"); sent != 1 || failed != 1 {
		t.Errorf("sent %v failed %v, want 1 and 1", sent, failed)
	}
}
