package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/actors/metrics"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/gitsrc"
	"github.com/false-systems/alumiini/k8s"
)

// The fakes below stand in for this package's own small interfaces; what
// they stand for is tested against a real API server and git server in
// k8s/clustertest and test/.

type fakeSource struct {
	commit, checkedOut string
	err                error
	dropped            []string // symlinks gitsrc removed
	changed            []string // paths the new commit changes; nil: unknown
	last               gitsrc.Request
	listedAt           time.Time // of the last listing; zero: none
}

func (f *fakeSource) Fetch(_ context.Context, req gitsrc.Request) (gitsrc.Result, error) {
	f.last = req
	if f.err != nil {
		return gitsrc.Result{}, f.err
	}
	res := gitsrc.Result{Commit: f.commit, Unchanged: f.commit == f.checkedOut, Dir: "/co", Root: "/co", DroppedLinks: f.dropped,
		Previous: f.checkedOut, ChangedPaths: f.changed}
	f.checkedOut = f.commit
	return res, nil
}

// Unmoved says quiet when a listing is set (listedAt), shows the commit
// checked out, and is fresh enough for the request.
func (f *fakeSource) Unmoved(req gitsrc.Request) (string, bool) {
	fresh := !f.listedAt.IsZero() && !req.RefsNotBefore.IsZero() && !f.listedAt.Before(req.RefsNotBefore)
	return f.checkedOut, fresh && f.err == nil && f.commit == f.checkedOut
}

// fakeCredentials has one empty Secret, cached or not.
type fakeCredentials struct{ cached bool }

func (f *fakeCredentials) Data(context.Context, string, string) (map[string][]byte, error) {
	f.cached = true
	return map[string][]byte{}, nil
}
func (f *fakeCredentials) Cached(string, string) bool { return f.cached }
func (f *fakeCredentials) Forget(string, string)      { f.cached = false }

type fakeApplier struct {
	res           k8s.Result
	err           error
	drift         k8s.DriftResult
	applies       int
	lastHashes    map[string]string
	lastPrune     bool            // !SkipPrune of the last Apply
	unhealthy     []k8s.Unhealthy // what WaitHealthy returns
	waited        int
	ctx           context.Context // of the last Apply
	lastInventory []v1alpha1.ObjectRef
}

func (f *fakeApplier) WaitHealthy(_ context.Context, _ []v1alpha1.ObjectRef, _ k8s.Options, waiting func([]k8s.Unhealthy)) ([]k8s.Unhealthy, error) {
	f.waited++
	if len(f.unhealthy) > 0 {
		waiting(f.unhealthy)
	}
	return f.unhealthy, nil
}

func (f *fakeApplier) Forget(string) {}

func (f *fakeApplier) Apply(ctx context.Context, objs []*unstructured.Unstructured, opts k8s.Options) (k8s.Result, error) {
	f.applies++
	f.ctx = ctx
	f.lastInventory = opts.Inventory
	f.lastHashes = opts.Hashes
	f.lastPrune = !opts.SkipPrune
	return f.res, f.err
}

func (f *fakeApplier) Drift(context.Context, []*unstructured.Unstructured, k8s.Options, v1alpha1.DriftMode) (k8s.DriftResult, error) {
	return f.drift, nil
}

// Moved says every object moved: the fake drift result decides.
func (f *fakeApplier) Moved(context.Context, []v1alpha1.ObjectRef, map[string]string, k8s.Options) (bool, error) {
	return true, nil
}

type fakeStatus struct {
	server   v1alpha1.GitRepositoryStatus // what the API server holds
	writeErr error
	calls    int // Write was called
	writes   int // and wrote
	gets     int
	others   map[string]*v1alpha1.GitRepository // other GitRepositories, by key
	// gate, when set, is a StatusGate of one: each request notes whether
	// its caller held it (gated).
	gate  *semaphore.Weighted
	gated []bool
}

func (f *fakeStatus) noteGate() {
	if f.gate == nil {
		return
	}
	free := f.gate.TryAcquire(1)
	if free {
		f.gate.Release(1)
	}
	f.gated = append(f.gated, !free)
}

func (f *fakeStatus) Get(_ context.Context, ns, name string) (*v1alpha1.GitRepository, error) {
	f.noteGate()
	f.gets++
	if ns+"/"+name == "ns/app" {
		return &v1alpha1.GitRepository{Status: *f.server.DeepCopy()}, nil
	}
	if r, ok := f.others[ns+"/"+name]; ok {
		return r.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(v1alpha1.GitRepositoryResource.GroupResource(), name)
}

func (f *fakeStatus) Write(_ context.Context, repo *v1alpha1.GitRepository, st v1alpha1.GitRepositoryStatus) (bool, error) {
	f.noteGate()
	f.calls++
	if equality.Semantic.DeepEqual(repo.Status, st) {
		return false, nil
	}
	if f.writeErr != nil {
		return false, f.writeErr
	}
	f.writes++
	f.server = *st.DeepCopy()
	return true, nil
}

type event struct{ typ, reason string }

type fakeRecorder struct{ events []event }

func (f *fakeRecorder) Event(_ *v1alpha1.GitRepository, typ, reason, _ string) {
	f.events = append(f.events, event{typ, reason})
}

type fakeEmitter struct{ events []cdevents.Event }

func (f *fakeEmitter) Emit(ev cdevents.Event) { f.events = append(f.events, ev) }

func (f *fakeEmitter) kinds() []cdevents.Kind {
	var out []cdevents.Kind
	for _, e := range f.events {
		out = append(out, e.Kind)
	}
	return out
}

type rig struct {
	p       *Pipeline
	source  *fakeSource
	applier *fakeApplier
	status  *fakeStatus
	rec     *fakeRecorder
	emitter *fakeEmitter
	parse   []error
	inputs  []string // what the fake build read outside spec.path
	repo    *v1alpha1.GitRepository
}

func newRig() *rig {
	r := &rig{source: &fakeSource{commit: "c1c1c1c1c1"}, applier: &fakeApplier{}, status: &fakeStatus{},
		rec: &fakeRecorder{}, emitter: &fakeEmitter{}}
	r.applier.res = k8s.Result{Applied: []v1alpha1.ObjectRef{{Kind: "ConfigMap", Name: "a"}},
		Inventory: []v1alpha1.ObjectRef{{Kind: "ConfigMap", Name: "a"}}, Hashes: map[string]string{"a": "h1"}}
	r.p = &Pipeline{Source: r.source, Applier: r.applier, Status: r.status, Recorder: r.rec, Events: r.emitter,
		Metrics: metrics.New(nil), Logger: zap.NewNop(),
		Load: func(string, string) ([]*unstructured.Unstructured, []error, []string) { return nil, r.parse, r.inputs }}
	r.repo = &v1alpha1.GitRepository{Spec: v1alpha1.GitRepositorySpec{URL: "https://git.example/r.git"}}
	r.repo.Namespace, r.repo.Name, r.repo.Generation = "ns", "app", 1
	return r
}

func (r *rig) sync(t *testing.T, trigger actors.Trigger, mem actors.Memory) (actors.Memory, error) {
	t.Helper()
	return r.p.Sync(context.Background(), r.repo.DeepCopy(), actors.SyncRequest{Trigger: trigger}, mem)
}

func condition(st *v1alpha1.GitRepositoryStatus, typ string) string {
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		return ""
	}
	return string(c.Status) + "/" + c.Reason
}

func TestSyncOutcomes(t *testing.T) {
	apiDown := &url.Error{Op: "Patch", URL: "https://api", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name       string
		setup      func(r *rig)
		trigger    actors.Trigger
		phase      v1alpha1.Phase
		ready      string
		event      event
		cdevents   []cdevents.Kind
		wantErr    error // nil: none
		notErr     error
		wantHashes bool
	}{
		{name: "applied", phase: v1alpha1.PhaseSynced, ready: "True/Applied", event: event{corev1.EventTypeNormal, "Synced"},
			cdevents: []cdevents.Kind{cdevents.RepositoryFetched, cdevents.DeploymentStarted, cdevents.DeploymentFinished}, wantHashes: true},
		{name: "fetch failed", setup: func(r *rig) { r.source.err = errors.New("repository not found") },
			phase: v1alpha1.PhaseFailed, ready: "False/FetchFailed", event: event{corev1.EventTypeWarning, "FetchFailed"},
			wantErr: errSyncFailed, notErr: actors.ErrAPIUnreachable},
		{name: "object failed", setup: func(r *rig) {
			r.applier.res.Failed = []k8s.ObjectError{{Ref: v1alpha1.ObjectRef{Kind: "ConfigMap", Name: "b"}, Err: errors.New("forbidden")}}
		}, phase: v1alpha1.PhaseFailed, ready: "False/SyncFailed", event: event{corev1.EventTypeWarning, "SyncFailed"},
			cdevents: []cdevents.Kind{cdevents.RepositoryFetched, cdevents.DeploymentStarted, cdevents.DeploymentFailed},
			wantErr:  errSyncFailed, notErr: actors.ErrStalled, wantHashes: true},
		{name: "stalled", setup: func(r *rig) { r.parse = []error{errors.New("deploy/a.yaml:3:1: bad")} },
			phase: v1alpha1.PhaseFailed, ready: "False/SyncFailed", event: event{corev1.EventTypeWarning, "SyncFailed"},
			cdevents: []cdevents.Kind{cdevents.RepositoryFetched, cdevents.DeploymentStarted, cdevents.DeploymentFailed},
			wantErr:  actors.ErrStalled, wantHashes: true},
		{name: "API server unreachable", setup: func(r *rig) { r.applier.err = apiDown },
			phase: v1alpha1.PhaseFailed, ready: "False/ApplyFailed", event: event{corev1.EventTypeWarning, "ApplyFailed"},
			cdevents: []cdevents.Kind{cdevents.RepositoryFetched, cdevents.DeploymentStarted, cdevents.DeploymentFailed},
			wantErr:  actors.ErrAPIUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			if tt.setup != nil {
				tt.setup(r)
			}
			mem, err := r.sync(t, actors.TriggerPoll, actors.Memory{})
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if tt.notErr != nil && errors.Is(err, tt.notErr) {
				t.Fatalf("error %v should not be %v", err, tt.notErr)
			}
			st := r.status.server
			if st.Phase != tt.phase || condition(&st, v1alpha1.ConditionReady) != tt.ready {
				t.Fatalf("status %s, Ready %s; want %s, %s (%s)", st.Phase, condition(&st, v1alpha1.ConditionReady), tt.phase, tt.ready, st.Message)
			}
			if mem.Status == nil || !equality.Semantic.DeepEqual(*mem.Status, st) {
				t.Fatalf("the Memory does not hold the status written: %+v", mem.Status)
			}
			if len(r.rec.events) != 1 || r.rec.events[0] != tt.event {
				t.Fatalf("Events %v, want [%v]", r.rec.events, tt.event)
			}
			if got := r.emitter.kinds(); !reflect.DeepEqual(got, tt.cdevents) {
				t.Fatalf("CDEvents %v, want %v", got, tt.cdevents)
			}
			if (mem.Hashes != nil) != tt.wantHashes || mem.RunID != "" {
				t.Fatalf("Memory hashes %v run %q; want hashes: %v, no open run", mem.Hashes, mem.RunID, tt.wantHashes)
			}
		})
	}
}

func TestStartedAndFinishedShareTheRunID(t *testing.T) {
	r := newRig()
	if _, err := r.sync(t, actors.TriggerPoll, actors.Memory{}); err != nil {
		t.Fatal(err)
	}
	ev := r.emitter.events
	if len(ev) != 3 || ev[1].RunID == "" || ev[1].RunID != ev[2].RunID {
		t.Fatalf("run ids %q and %q, want one shared id", ev[1].RunID, ev[2].RunID)
	}
}

// Following syncs go by the Memory: nothing is read from the API server,
// an unchanged commit applies nothing, a stalled commit is not retried, a
// manual request applies again.
func TestMemoryCarriesStateBetweenSyncs(t *testing.T) {
	r := newRig()
	mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	gets, writes := r.status.gets, r.status.writes
	mem, err = r.sync(t, actors.TriggerPoll, mem)
	if err != nil || r.applier.applies != 1 || r.status.gets != gets || r.status.writes != writes {
		t.Fatalf("unchanged poll: err %v, %d applies, %d gets, %d writes; want nothing", err, r.applier.applies, r.status.gets-gets, r.status.writes-writes)
	}
	if _, err = r.sync(t, actors.TriggerManual, mem); err != nil || r.applier.applies != 2 || r.applier.lastHashes != nil {
		t.Fatalf("manual: err %v, %d applies, hashes %v; want a full apply", err, r.applier.applies, r.applier.lastHashes)
	}

	r.source.commit, r.parse = "c2c2c2c2c2", []error{errors.New("bad")}
	mem, err = r.sync(t, actors.TriggerWebhook, mem)
	if !errors.Is(err, actors.ErrStalled) || r.applier.lastHashes["a"] != "h1" {
		t.Fatalf("new commit: err %v, hashes %v; want stalled, last hashes trusted", err, r.applier.lastHashes)
	}
	applies := r.applier.applies
	if _, err = r.sync(t, actors.TriggerPoll, mem); err != nil || r.applier.applies != applies {
		t.Fatalf("poll of a stalled commit: err %v, %d applies; want none", err, r.applier.applies-applies)
	}
}

func TestUnrecordedApplyForgetsTheStatus(t *testing.T) {
	r := newRig()
	mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	r.source.commit = "c2c2c2c2c2"
	r.status.writeErr = &url.Error{Op: "Patch", URL: "https://api", Err: syscall.ECONNREFUSED}
	mem, err = r.sync(t, actors.TriggerPoll, mem)
	if !errors.Is(err, actors.ErrAPIUnreachable) || mem.Status != nil {
		t.Fatalf("err %v, Memory status %v; want API unreachable and the status forgotten", err, mem.Status)
	}
	if got := r.emitter.kinds(); got[len(got)-1] == cdevents.DeploymentFinished {
		t.Fatalf("CDEvents %v: an unrecorded apply is not finished", got)
	}
}

func TestDriftCheckOutcomes(t *testing.T) {
	drifted := []v1alpha1.ObjectRef{{Kind: "ConfigMap", Namespace: "ns", Name: "a"}}
	tests := []struct {
		name     string
		drift    k8s.DriftResult
		cond     string
		event    []event
		cdevents []cdevents.Kind
	}{
		{"in sync", k8s.DriftResult{}, "False/InSync", nil, nil},
		{"corrected", k8s.DriftResult{Drifted: drifted, Corrected: drifted}, "False/Corrected",
			[]event{{corev1.EventTypeNormal, "DriftCorrected"}}, []cdevents.Kind{cdevents.DriftDetected, cdevents.DriftCorrected}},
		{"check failed", k8s.DriftResult{Failed: []k8s.ObjectError{{Ref: drifted[0], Err: errors.New("forbidden")}}}, "True/CheckFailed",
			[]event{{corev1.EventTypeWarning, "DriftCheckFailed"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
			if err != nil {
				t.Fatal(err)
			}
			r.rec.events, r.emitter.events, r.applier.drift = nil, nil, tt.drift
			mem, err = r.sync(t, actors.TriggerReconcile, mem)
			if err != nil || condition(mem.Status, v1alpha1.ConditionDrifted) != tt.cond {
				t.Fatalf("err %v, Drifted %s; want %s", err, condition(mem.Status, v1alpha1.ConditionDrifted), tt.cond)
			}
			if !reflect.DeepEqual(r.rec.events, tt.event) || !reflect.DeepEqual(r.emitter.kinds(), tt.cdevents) {
				t.Fatalf("Events %v CDEvents %v; want %v %v", r.rec.events, r.emitter.kinds(), tt.event, tt.cdevents)
			}
		})
	}
}

func TestEveryKindHasAnEffect(t *testing.T) {
	for k := Unchanged; k <= Abandoned; k++ {
		if effects[k].metric == "" || effects[k].log == "" {
			t.Errorf("Kind %d has no row in the outcome table", k)
		}
	}
}

func TestAPIUnreachable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &url.Error{Op: "Get", URL: "https://api", Err: syscall.ECONNREFUSED}, true},
		{"our timeout", &url.Error{Op: "Get", URL: "https://api", Err: context.DeadlineExceeded}, false},
		{"cancelled", fmt.Errorf("apply: %w", context.Canceled), false},
		{"an answer", errors.New("forbidden"), false},
	}
	for _, tt := range tests {
		if got := apiUnreachable(tt.err); got != tt.want {
			t.Errorf("%s: apiUnreachable = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestDroppedSymlinksAreNamed: a link out of the checkout, which gitsrc
// removed, is reported like a file that does not parse: named in the
// status, the rest applied, nothing pruned (the link may have been a
// manifest), no retry until git changes.
func TestDroppedSymlinksAreNamed(t *testing.T) {
	r := newRig()
	r.source.dropped = []string{"deploy/secret.yaml"}
	_, err := r.sync(t, actors.TriggerPoll, actors.Memory{})
	if !errors.Is(err, actors.ErrStalled) {
		t.Fatalf("error %v, want stalled", err)
	}
	msg := r.status.server.Message
	if !strings.Contains(msg, "deploy/secret.yaml: symbolic link points outside the repository checkout") {
		t.Fatalf("status message %q does not name the link", msg)
	}
	if r.applier.applies != 1 || r.applier.lastPrune {
		t.Fatalf("applies %d, prune %v; want the rest applied without pruning", r.applier.applies, r.applier.lastPrune)
	}
}

// A status write that fails mid-sync (the response cut, say) must not
// make the apply forget the inventory it read: pruning would then miss
// what left git, and the written inventory would leak it for good.
func TestFailedStatusWriteKeepsTheInventory(t *testing.T) {
	r := newRig()
	mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	r.source.commit = "c2c2c2c2c2"
	r.status.writeErr = &url.Error{Op: "Patch", URL: "https://api", Err: syscall.ECONNRESET}
	_, _ = r.sync(t, actors.TriggerPoll, mem)
	if len(r.applier.lastInventory) != 1 || r.applier.lastInventory[0].Name != "a" {
		t.Fatalf("the apply after a failed status write got inventory %v, want the one read before it", r.applier.lastInventory)
	}
}

// TestTheSyncingStatusGoesOutBesideTheApply: a push's objects do not wait
// for the Syncing status to land; the outcome's write waits for it, so the
// writes land in order and the status ends as the outcome says.
func TestTheSyncingStatusGoesOutBesideTheApply(t *testing.T) {
	r := newRig()
	applied := make(chan struct{})
	status := &heldStatus{fakeStatus: r.status, hold: v1alpha1.PhaseSyncing, until: applied}
	r.p.Status = status
	r.p.Applier = &signalApplier{fakeApplier: r.applier, applied: applied}
	if _, err := r.sync(t, actors.TriggerWebhook, actors.Memory{}); err != nil {
		t.Fatal(err)
	}
	if status.gaveUp {
		t.Fatal("the apply waited for the Syncing status write")
	}
	want := []v1alpha1.Phase{v1alpha1.PhasePending, v1alpha1.PhaseSyncing, v1alpha1.PhaseSynced}
	if !reflect.DeepEqual(status.phases, want) {
		t.Fatalf("status writes %v, want %v", status.phases, want)
	}
	if r.status.server.Phase != v1alpha1.PhaseSynced {
		t.Fatalf("status ends %s, want Synced", r.status.server.Phase)
	}
}

// heldStatus holds each write of phase hold until until is closed, giving
// up after five seconds, and records the phases written, in order.
type heldStatus struct {
	*fakeStatus
	hold   v1alpha1.Phase
	until  chan struct{}
	gaveUp bool
	phases []v1alpha1.Phase
}

func (h *heldStatus) Write(ctx context.Context, repo *v1alpha1.GitRepository, st v1alpha1.GitRepositoryStatus) (bool, error) {
	if st.Phase == h.hold {
		select {
		case <-h.until:
		case <-time.After(5 * time.Second):
			h.gaveUp = true
		}
	}
	h.phases = append(h.phases, st.Phase)
	return h.fakeStatus.Write(ctx, repo, st)
}

// signalApplier closes applied on its first Apply.
type signalApplier struct {
	*fakeApplier
	applied chan struct{}
	once    sync.Once
}

func (s *signalApplier) Apply(ctx context.Context, objs []*unstructured.Unstructured, opts k8s.Options) (k8s.Result, error) {
	s.once.Do(func() { close(s.applied) })
	return s.fakeApplier.Apply(ctx, objs, opts)
}

// TestStepsAreTimed checks alumiini_sync_step_seconds: a webhook sync
// counts its wait for the actor and each step it ran; a reconcile of an
// unchanged repository counts the drift steps, not the step that hands
// over to them (its time would count them twice); a reconcile that finds
// a new commit counts that step and no drift step; a retried webhook does
// not count its backoff as a wait.
func TestStepsAreTimed(t *testing.T) {
	r := newRig()
	reg := prometheus.NewRegistry()
	r.p.Metrics = metrics.New(reg)
	heard := time.Now().Add(-time.Second)
	mem, err := r.p.Sync(context.Background(), r.repo.DeepCopy(),
		actors.SyncRequest{Trigger: actors.TriggerWebhook, Commit: r.source.commit, HeardAt: heard}, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	counts := func() (map[string]uint64, map[string]float64) {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		count, sum := map[string]uint64{}, map[string]float64{}
		for _, f := range families {
			if f.GetName() != "alumiini_sync_step_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				key := ""
				for _, l := range m.GetLabel() { // step, then trigger
					key += l.GetValue() + "/"
				}
				count[key], sum[key] = m.GetSummary().GetSampleCount(), m.GetSummary().GetSampleSum()
			}
		}
		return count, sum
	}
	count, sum := counts()
	for _, key := range []string{"queued/webhook/", "fetch/webhook/", "apply/webhook/", "judge/webhook/", "conclude/webhook/"} {
		if count[key] != 1 {
			t.Errorf("%s counted %d times; want once (all: %v)", key, count[key], count)
		}
	}
	if sum["queued/webhook/"] < 1 {
		t.Errorf("queued %.3fs; want the second between the webhook and the sync", sum["queued/webhook/"])
	}

	if mem, err = r.sync(t, actors.TriggerReconcile, mem); err != nil {
		t.Fatal(err)
	}
	count, _ = counts()
	for _, key := range []string{"fetch/reconcile/", "drift/readStatus/reconcile/", "driftCheck/reconcile/", "conclude/reconcile/"} {
		if count[key] != 1 {
			t.Errorf("%s counted %d times; want once (all: %v)", key, count[key], count)
		}
	}
	if n := count["skipUnchanged/reconcile/"]; n != 0 {
		t.Errorf("skipUnchanged counted on a drift check (%d): its time is the drift steps'", n)
	}

	r.source.commit = "c2c2c2c2c2" // a reconcile that finds a new commit syncs it
	if _, err = r.sync(t, actors.TriggerReconcile, mem); err != nil {
		t.Fatal(err)
	}
	count, _ = counts()
	if count["skipUnchanged/reconcile/"] != 1 || count["apply/reconcile/"] != 1 || count["driftCheck/reconcile/"] != 1 {
		t.Errorf("a reconcile that applied: skipUnchanged %d, apply %d, driftCheck %d; want 1, 1 and still 1",
			count["skipUnchanged/reconcile/"], count["apply/reconcile/"], count["driftCheck/reconcile/"])
	}

	retry := actors.SyncRequest{Trigger: actors.TriggerWebhook, Commit: r.source.commit, HeardAt: heard, Retry: true}
	if _, err := r.p.Sync(context.Background(), r.repo.DeepCopy(), retry, mem); err != nil {
		t.Fatal(err)
	}
	if count, _ = counts(); count["queued/webhook/"] != 1 || count["fetch/webhook/"] != 2 {
		t.Errorf("a retried webhook: queued %d, fetch %d; want 1 (not again) and 2", count["queued/webhook/"], count["fetch/webhook/"])
	}
}

// TestAQuietDriftCheckWritesNoStatus: a drift check that finds what the
// last one found leaves the status alone without handing it to the
// writer at all (most drift checks at scale end that way).
func TestAQuietDriftCheckWritesNoStatus(t *testing.T) {
	r := newRig()
	mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	if mem, err = r.sync(t, actors.TriggerReconcile, mem); err != nil { // the first sync already said InSync
		t.Fatal(err)
	}
	calls := r.status.calls
	if _, err = r.sync(t, actors.TriggerReconcile, mem); err != nil {
		t.Fatal(err)
	}
	if n := r.status.calls - calls; n != 0 {
		t.Fatalf("a quiet drift check called the status writer %d times; want 0", n)
	}
}

// TestFetchesSayWhoWaitsForThem: a sync someone waits for asks gitsrc for
// an urgent fetch, whose checkout passes by the queue of timer work.
func TestFetchesSayWhoWaitsForThem(t *testing.T) {
	for trigger, urgent := range map[actors.Trigger]bool{
		actors.TriggerWebhook: true, actors.TriggerManual: true, actors.TriggerSpec: true,
		actors.TriggerPoll: false, actors.TriggerReconcile: false, actors.TriggerStartup: false, actors.TriggerDependency: false,
	} {
		r := newRig()
		if _, err := r.sync(t, trigger, actors.Memory{}); err != nil {
			t.Fatalf("%s: %v", trigger, err)
		}
		if r.source.last.Urgent != urgent {
			t.Errorf("%s: fetch request Urgent=%v, want %v", trigger, r.source.last.Urgent, urgent)
		}
	}
}

// A sync that skipped no object sent every one, so its status says the
// cluster matches git and the first drift check has nothing to write. One
// that skipped objects by their trusted hashes sent only what changed: it
// leaves the condition as the last check left it. With drift: Ignore no check runs, and nothing
// says Drifted.
func TestFullApplySaysInSync(t *testing.T) {
	drifted := k8s.DriftResult{Drifted: []v1alpha1.ObjectRef{{Kind: "ConfigMap", Namespace: "ns", Name: "a"}}}
	t.Run("first sync", func(t *testing.T) {
		r := newRig()
		mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
		if got := condition(mem.Status, v1alpha1.ConditionDrifted); err != nil || got != "False/InSync" {
			t.Fatalf("err %v, Drifted %q; want False/InSync", err, got)
		}
		writes := r.status.writes
		if _, err := r.sync(t, actors.TriggerReconcile, mem); err != nil || r.status.writes != writes {
			t.Fatalf("first drift check: err %v, %d status writes; want none", err, r.status.writes-writes)
		}
	})
	t.Run("new commit, objects skipped", func(t *testing.T) {
		r := newRig()
		r.repo.Spec.Drift = v1alpha1.DriftDetect
		mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
		if err != nil {
			t.Fatal(err)
		}
		r.applier.drift = drifted
		if mem, err = r.sync(t, actors.TriggerReconcile, mem); err != nil {
			t.Fatal(err)
		}
		found := condition(mem.Status, v1alpha1.ConditionDrifted)
		if found != "True/DriftDetected" {
			t.Fatalf("the check's Drifted is %q, want True/DriftDetected", found)
		}
		r.source.commit = "c2c2c2c2c2"
		r.applier.res.Unchanged = []v1alpha1.ObjectRef{{Kind: "ConfigMap", Name: "b"}} // skipped: its hash was trusted
		mem, err = r.sync(t, actors.TriggerPoll, mem)
		if got := condition(mem.Status, v1alpha1.ConditionDrifted); err != nil || got != found || r.applier.lastHashes == nil {
			t.Fatalf("err %v, Drifted %q, hashes trusted %v; want the check's %q kept", err, got, r.applier.lastHashes, found)
		}
	})
	t.Run("drift: Ignore", func(t *testing.T) {
		r := newRig()
		r.repo.Spec.Drift = v1alpha1.DriftIgnore
		mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
		if got := condition(mem.Status, v1alpha1.ConditionDrifted); err != nil || got != "" {
			t.Fatalf("err %v, Drifted %q; want none", err, got)
		}
	})
}
