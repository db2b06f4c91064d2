package actors

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// A repository whose sync waits for a dependency syncs again as soon as
// the supervisor sees that dependency turn Ready: not on its own hourly
// poll, not on a growing backoff. One that does not wait is left alone.
func TestDependencyReadyWakesWaitingDependents(t *testing.T) {
	rec := &recorder{fn: func(_ context.Context, repo *v1alpha1.GitRepository, req SyncRequest) error {
		if repo.Name == "app" && req.Trigger != TriggerDependency {
			return fmt.Errorf("%w: platform is not Ready", ErrWaiting)
		}
		return nil
	}}
	s := start(t, Config{Syncer: rec, Backoff: Backoff{Base: time.Hour, Max: time.Hour}})
	platform := newRepo("ns", "platform", 1, time.Hour)
	app := newRepo("ns", "app", 1, time.Hour)
	app.Spec.DependsOn = []v1alpha1.DependencyReference{{Name: "platform"}}
	other := newRepo("ns", "other", 1, time.Hour)
	other.Spec.DependsOn = app.Spec.DependsOn
	for _, r := range []*v1alpha1.GitRepository{platform, app, other} {
		s.Upsert(r)
	}
	waitStatus(t, s, "ns/app", "waiting", func(st RepoStatus) bool { return st.Syncs == 1 })
	waitStatus(t, s, "ns/other", "synced", func(st RepoStatus) bool { return st.Syncs == 1 })

	// platform's status turns Ready (as the informer would report it).
	ready := platform.DeepCopy()
	ready.Status = v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhaseSynced, ObservedGeneration: 1, LastSyncedCommit: "c1", LastAttemptedCommit: "c1",
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1}}}
	s.Upsert(ready)
	waitStatus(t, s, "ns/app", "woken", func(st RepoStatus) bool { return st.Syncs == 2 && st.LastError == nil })
	if tr := triggers(rec.of("ns/app")); tr[1] != TriggerDependency {
		t.Fatalf("app's triggers %v, want the second from its dependency", tr)
	}
	// A status change that keeps platform Ready at the same commit wakes nobody.
	again := ready.DeepCopy()
	again.Status.Message = "drift checked"
	s.Upsert(again)
	// Once probe exists, the supervisor has handled that upsert and sent any
	// wake; a status question reaches each dependent after it.
	s.Upsert(newRepo("ns", "probe", 1, time.Hour))
	waitStatus(t, s, "ns/probe", "spawned", func(RepoStatus) bool { return true })
	for key, want := range map[string]int{"ns/app": 2, "ns/other": 1} {
		if st := status(t, s, key); st.State != StateIdle || st.Syncs != want {
			t.Fatalf("%s: %s after %d syncs, want idle after %d: only a waiting dependent is woken, once", key, st.State, st.Syncs, want)
		}
	}
}
