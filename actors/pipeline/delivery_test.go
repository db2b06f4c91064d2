package pipeline

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/metrics"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// A commit that changes nothing the build read is recorded as seen: no
// apply, Event or CDEvent, the status moves to the commit and keeps its
// message. One that changes a file read outside spec.path applies.
func TestUnrelatedCommitsAreOnlyRecorded(t *testing.T) {
	r := newRig()
	r.repo.Spec.Path = "apps/a"
	r.inputs = []string{"bases/web/web.yaml"}
	mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	message, events, cdev := r.status.server.Message, len(r.rec.events), len(r.emitter.events)

	r.source.commit, r.source.changed = "c2c2c2c2c2", []string{"apps/b/b.yaml", "README.md"}
	mem, err = r.sync(t, actors.TriggerPoll, mem)
	st := r.status.server
	if err != nil || r.applier.applies != 1 || st.LastSyncedCommit != "c2c2c2c2c2" || st.Message != message {
		t.Fatalf("unrelated commit: err %v, %d applies, synced %s, message %q; want recorded only", err, r.applier.applies, st.LastSyncedCommit, st.Message)
	}
	if len(r.rec.events) != events || len(r.emitter.events) != cdev {
		t.Fatalf("unrelated commit sent %d Event(s) and %d CDEvent(s)", len(r.rec.events)-events, len(r.emitter.events)-cdev)
	}
	if mem.Commit != "c2c2c2c2c2" || mem.Hashes["a"] != "h1" {
		t.Fatalf("Memory %s %v, want the new commit with the hashes kept", mem.Commit, mem.Hashes)
	}

	steps := []struct {
		commit  string
		changed []string
	}{
		{"c3c3c3c3c3", []string{"bases/web/web.yaml"}}, // a base the build read
		{"c4c4c4c4c4", []string{"apps/a/a.yaml"}},      // under spec.path
		{"c5c5c5c5c5", nil},                            // unknown
	}
	for i, step := range steps {
		r.source.commit, r.source.changed = step.commit, step.changed
		if mem, err = r.sync(t, actors.TriggerPoll, mem); err != nil || r.applier.applies != 2+i {
			t.Fatalf("%s changing %v: err %v, %d applies; want an apply", step.commit, step.changed, err, r.applier.applies)
		}
	}
}

func TestDependencies(t *testing.T) {
	ready := func(name string, deps ...string) *v1alpha1.GitRepository {
		g := &v1alpha1.GitRepository{}
		g.Namespace, g.Name, g.Generation = "ns", name, 1
		for _, d := range deps {
			g.Spec.DependsOn = append(g.Spec.DependsOn, v1alpha1.DependencyReference{Name: d})
		}
		g.Status = v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhaseSynced, ObservedGeneration: 1, LastSyncedCommit: "x", LastAttemptedCommit: "x",
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1}}}
		return g
	}
	failing := ready("db")
	failing.Status.Phase, failing.Status.Message = v1alpha1.PhaseFailed, "Fetch failed."
	tests := []struct {
		name    string
		others  []*v1alpha1.GitRepository
		wantErr error
		phase   v1alpha1.Phase
		message string
	}{
		{"missing", nil, actors.ErrWaiting, v1alpha1.PhasePending, "Waiting for ns/db, which does not exist."},
		{"failing", []*v1alpha1.GitRepository{failing}, actors.ErrWaiting, v1alpha1.PhasePending, "Waiting for ns/db, which failed: Fetch failed."},
		{"ready", []*v1alpha1.GitRepository{ready("db")}, nil, v1alpha1.PhaseSynced, "Applied commit"},
		{"cycle", []*v1alpha1.GitRepository{ready("db", "cache"), ready("cache", "app")}, actors.ErrStalled, v1alpha1.PhaseFailed,
			"ns/app → ns/db → ns/cache → ns/app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			r.repo.Spec.DependsOn = []v1alpha1.DependencyReference{{Name: "db"}}
			r.status.others = map[string]*v1alpha1.GitRepository{}
			for _, o := range tt.others {
				r.status.others[o.Key()] = o
			}
			_, err := r.sync(t, actors.TriggerPoll, actors.Memory{})
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			st := r.status.server
			if st.Phase != tt.phase || !strings.Contains(st.Message, tt.message) {
				t.Fatalf("status %s %q, want %s %q", st.Phase, st.Message, tt.phase, tt.message)
			}
			if applied := r.applier.applies > 0; applied != (tt.wantErr == nil) {
				t.Fatalf("%d applies with error %v", r.applier.applies, err)
			}
		})
	}
}

func TestAwaitGatesReady(t *testing.T) {
	r := newRig()
	r.repo.Spec.Wait = true
	if _, err := r.sync(t, actors.TriggerPoll, actors.Memory{}); err != nil {
		t.Fatal(err)
	}
	st := r.status.server
	if condition(&st, v1alpha1.ConditionReady) != "True/Healthy" || !strings.Contains(st.Message, "healthy") {
		t.Fatalf("healthy: Ready %s %q", condition(&st, v1alpha1.ConditionReady), st.Message)
	}

	r = newRig()
	r.repo.Spec.Wait = true
	r.applier.unhealthy = []k8s.Unhealthy{{Ref: v1alpha1.ObjectRef{Kind: "Deployment", Namespace: "ns", Name: "web"}, Status: "InProgress", Message: "0 of 2 available"}}
	mem, err := r.sync(t, actors.TriggerPoll, actors.Memory{})
	st = r.status.server
	if !errors.Is(err, errSyncFailed) || st.Phase != v1alpha1.PhaseFailed || st.LastSyncedCommit != "" {
		t.Fatalf("unhealthy: err %v, phase %s, synced %q; want a failure, the commit not synced", err, st.Phase, st.LastSyncedCommit)
	}
	if c := condition(&st, v1alpha1.ConditionReady); c != "False/Unhealthy" || !strings.Contains(st.Message, "Deployment ns/web is InProgress: 0 of 2 available") {
		t.Fatalf("unhealthy: Ready %s %q", c, st.Message)
	}
	if len(st.Inventory) != 1 || mem.Hashes == nil {
		t.Fatalf("inventory %v, hashes %v: what was applied must stay prunable and not be sent again", st.Inventory, mem.Hashes)
	}
	// The retry sends nothing new and waits again.
	r.applier.unhealthy = nil
	if _, err := r.sync(t, actors.TriggerPoll, mem); err != nil || r.applier.waited != 2 || r.applier.lastHashes["a"] != "h1" {
		t.Fatalf("retry: err %v, %d waits, hashes %v", err, r.applier.waited, r.applier.lastHashes)
	}
	if r.status.server.LastSyncedCommit != r.source.commit {
		t.Fatalf("healthy retry did not record commit %s", r.source.commit)
	}
}

func TestListingFreshness(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		trigger   actors.Trigger
		lastFetch time.Time
		heardAt   time.Time
		want      time.Time
	}{
		{actors.TriggerPoll, start.Add(-30 * time.Second), time.Time{}, start.Add(-30 * time.Second)}, // since my last fetch
		{actors.TriggerPoll, time.Time{}, time.Time{}, start.Add(-time.Minute)},                       // within one interval
		{actors.TriggerWebhook, start.Add(-2 * time.Hour), time.Time{}, start.Add(-time.Minute)},
		{actors.TriggerWebhook, start.Add(-time.Second), start.Add(-50 * time.Millisecond), start.Add(-50 * time.Millisecond)}, // begun after the push was heard of
		{actors.TriggerManual, start.Add(-30 * time.Second), time.Time{}, time.Time{}},                                         // always afresh
		{actors.TriggerSpec, start.Add(-30 * time.Second), time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		repo := &v1alpha1.GitRepository{Spec: v1alpha1.GitRepositorySpec{Interval: metav1.Duration{Duration: time.Minute}}}
		s := &syncState{repo: repo, req: actors.SyncRequest{Trigger: tt.trigger, HeardAt: tt.heardAt}, mem: actors.Memory{LastFetch: tt.lastFetch}, start: start}
		if got := s.refsNotBefore(); !got.Equal(tt.want) {
			t.Errorf("%s after %v: %v, want %v", tt.trigger, tt.lastFetch, got, tt.want)
		}
	}
}

// A poll is answered from memory only when the sync would end at
// skipUnchanged: Synced at this generation, at the commit a fresh listing
// shows and the checkout holds, with spec.secretRef still cached. The
// answer notes the poll's time for the next one's freshness and counts it.
func TestQuietPoll(t *testing.T) {
	tests := []struct {
		name  string
		setup func(r *rig, mem *actors.Memory)
		quiet bool
	}{
		{"synced and unmoved", func(*rig, *actors.Memory) {}, true},
		{"status only in the informer's copy", func(r *rig, mem *actors.Memory) { r.repo.Status, mem.Status = *mem.Status, nil }, true},
		{"no fresh listing", func(r *rig, _ *actors.Memory) { r.source.listedAt = time.Time{} }, false},
		{"listing older than the last fetch", func(r *rig, mem *actors.Memory) { mem.LastFetch = r.source.listedAt.Add(time.Second) }, false},
		{"the ref moved", func(r *rig, _ *actors.Memory) { r.source.commit = "c2c2c2c2c2" }, false},
		{"the status names another commit", func(_ *rig, mem *actors.Memory) {
			st := mem.Status.DeepCopy()
			st.LastSyncedCommit = "c0c0c0c0c0"
			mem.Status = st
		}, false},
		{"a new generation", func(r *rig, _ *actors.Memory) { r.repo.Generation++ }, false},
		{"failed", func(_ *rig, mem *actors.Memory) {
			st := mem.Status.DeepCopy()
			st.Phase = v1alpha1.PhaseFailed
			mem.Status = st
		}, false},
		{"credentials cached", func(r *rig, _ *actors.Memory) {
			r.repo.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: "creds"}
			r.p.Secrets = &fakeCredentials{cached: true}
		}, true},
		{"credentials to read again", func(r *rig, _ *actors.Memory) {
			r.repo.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: "creds"}
			r.p.Secrets = &fakeCredentials{}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			reg := prometheus.NewRegistry()
			r.p.Metrics = metrics.New(reg)
			mem, err := r.sync(t, actors.TriggerStartup, actors.Memory{})
			if err != nil || mem.Status == nil || mem.Status.Phase != v1alpha1.PhaseSynced {
				t.Fatalf("first sync: %v, status %+v", err, mem.Status)
			}
			r.source.listedAt = time.Now()
			mem.LastFetch = r.source.listedAt.Add(-time.Second)
			tt.setup(r, &mem)
			applies, writes := r.applier.applies, r.status.writes
			start := time.Now()
			next, quiet := r.p.QuietPoll(r.repo, mem)
			if quiet != tt.quiet {
				t.Fatalf("QuietPoll = %v, want %v", quiet, tt.quiet)
			}
			polls := syncsCounted(t, reg, "unchanged", string(actors.TriggerPoll))
			switch {
			case quiet && (next.LastFetch.Before(start) || polls != 1):
				t.Fatalf("quiet: LastFetch %v (poll began %v), %v polls counted; want the poll's time, 1", next.LastFetch, start, polls)
			case !quiet && (!reflect.DeepEqual(next, mem) || polls != 0):
				t.Fatalf("not quiet: Memory changed or %v polls counted", polls)
			case r.applier.applies != applies || r.status.writes != writes:
				t.Fatalf("QuietPoll applied %d times and wrote %d statuses", r.applier.applies-applies, r.status.writes-writes)
			}
		})
	}
}

// syncsCounted is alumiini_syncs_total for one result and trigger.
func syncsCounted(t *testing.T, reg *prometheus.Registry, result, trigger string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "alumiini_syncs_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["result"] == result && labels["trigger"] == trigger {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A new repository's status read and Pending write, made before its
// sync holds a slot, pass the StatusGate; its writes once it holds one do
// not.
func TestStatusGateBoundsStatusTrafficOutsideTheSlots(t *testing.T) {
	r := newRig()
	r.p.StatusGate = semaphore.NewWeighted(1)
	r.status.gate = r.p.StatusGate
	slot := func() (context.Context, error) { return context.Background(), nil }
	_, err := r.p.Sync(context.Background(), r.repo.DeepCopy(), actors.SyncRequest{Trigger: actors.TriggerStartup, Slot: slot}, actors.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	// Get and Pending before the slot; Syncing and Synced in it.
	if want := []bool{true, true, false, false}; !reflect.DeepEqual(r.status.gated, want) {
		t.Fatalf("status requests through the gate: %v, want %v", r.status.gated, want)
	}
	if !r.p.StatusGate.TryAcquire(1) {
		t.Fatal("the sync left the gate held")
	}
}

type slotKey struct{}

// A sync takes its slot only once it has something to write, and goes on
// with the slot's context; a quiet poll takes none; a slot that never
// comes ends the sync without a status write.
func TestSlotIsTakenBeforeWritingOnly(t *testing.T) {
	r := newRig()
	taken := 0
	slotCtx := context.WithValue(context.Background(), slotKey{}, "slot")
	slot := func() (context.Context, error) { taken++; return slotCtx, nil }
	sync := func(mem actors.Memory) (actors.Memory, error) {
		return r.p.Sync(context.Background(), r.repo.DeepCopy(), actors.SyncRequest{Trigger: actors.TriggerPoll, Slot: slot}, mem)
	}
	mem, err := sync(actors.Memory{})
	if err != nil || taken != 1 || r.applier.ctx.Value(slotKey{}) != "slot" {
		t.Fatalf("apply: err %v, %d slots taken, apply context from the slot: %v", err, taken, r.applier.ctx.Value(slotKey{}))
	}
	if _, err := sync(mem); err != nil || taken != 1 {
		t.Fatalf("quiet poll: err %v, %d slots taken; want none more", err, taken-1)
	}

	r = newRig()
	stopping := errors.New("not started: shutting down")
	_, err = r.p.Sync(context.Background(), r.repo.DeepCopy(), actors.SyncRequest{Trigger: actors.TriggerPoll,
		Slot: func() (context.Context, error) { return nil, stopping }}, actors.Memory{})
	if !errors.Is(err, stopping) || r.applier.applies != 0 || r.status.server.Phase != v1alpha1.PhasePending {
		t.Fatalf("no slot: err %v, %d applies, phase %s; want the slot's error, nothing applied, still Pending", err, r.applier.applies, r.status.server.Phase)
	}
}
