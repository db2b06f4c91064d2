package v1alpha1

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDependencyKeys(t *testing.T) {
	g := &GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web"},
		Spec: GitRepositorySpec{DependsOn: []DependencyReference{
			{Name: "crds", Namespace: "infra"}, {Name: "db"}, {Name: "db", Namespace: "apps"}, {Name: "crds"},
		}}}
	want := []string{"infra/crds", "apps/db", "apps/crds"}
	if got := g.DependencyKeys(); !reflect.DeepEqual(got, want) {
		t.Fatalf("DependencyKeys = %v, want %v", got, want)
	}
	for key, want := range map[string]bool{"infra/crds": true, "apps/db": true, "apps/crds": true, "infra/db": false, "apps/web": false} {
		if got := g.DependsOn(key); got != want {
			t.Errorf("DependsOn(%s) = %v, want %v", key, got, want)
		}
	}
}

func TestDependencyReady(t *testing.T) {
	const a, b = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	cond := func(typ string, status metav1.ConditionStatus, gen int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, ObservedGeneration: gen}
	}
	synced := GitRepositoryStatus{Phase: PhaseSynced, ObservedGeneration: 2, LastSyncedCommit: a, LastAttemptedCommit: a,
		Conditions: []metav1.Condition{cond(ConditionReady, metav1.ConditionTrue, 2)}}
	with := func(change func(st *GitRepositoryStatus)) GitRepositoryStatus {
		st := *synced.DeepCopy()
		change(&st)
		return st
	}
	tests := []struct {
		name   string
		status GitRepositoryStatus
		want   string // "" = ready; else a fragment of the reason
	}{
		{"synced at its latest commit", synced, ""},
		{"never synced", GitRepositoryStatus{}, "has not synced its generation 2"},
		{"older generation", with(func(st *GitRepositoryStatus) { st.ObservedGeneration = 1 }), "generation 2"},
		{"Ready for an older generation", with(func(st *GitRepositoryStatus) { st.Conditions[0].ObservedGeneration = 1 }), "generation 2"},
		{"failed", with(func(st *GitRepositoryStatus) { st.Phase, st.Message = PhaseFailed, "Commit bbbbbbb: bad YAML." }), "failed: Commit bbbbbbb: bad YAML"},
		{"syncing", with(func(st *GitRepositoryStatus) { st.Phase = PhaseSyncing }), "is syncing"},
		{"reconciling", with(func(st *GitRepositoryStatus) {
			st.Conditions = append(st.Conditions, cond(ConditionReconciling, metav1.ConditionTrue, 2))
		}), "is syncing"},
		{"pending", with(func(st *GitRepositoryStatus) { st.Phase = PhasePending }), "is Pending, not Synced"},
		{"not Ready", with(func(st *GitRepositoryStatus) { st.Conditions[0].Status = metav1.ConditionFalse }), "is not Ready"},
		{"no Ready condition", with(func(st *GitRepositoryStatus) { st.Conditions = nil }), "is not Ready"},
		{"a newer commit attempted", with(func(st *GitRepositoryStatus) { st.LastAttemptedCommit = b }), "latest commit bbbbbbb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dep := &GitRepository{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Status: tt.status}
			ok, why := DependencyReady(dep)
			if ok != (tt.want == "") || !strings.Contains(why, tt.want) {
				t.Fatalf("DependencyReady = %v, %q; want ready=%v with %q", ok, why, tt.want == "", tt.want)
			}
		})
	}
}

func TestFindCycle(t *testing.T) {
	tests := []struct {
		name  string
		graph map[string][]string
		start string
		want  string // CyclePath, "" = none
	}{
		{"no dependencies", map[string][]string{"a": nil}, "a", ""},
		{"chain", map[string][]string{"a": {"b"}, "b": {"c"}}, "a", ""},
		{"diamond", map[string][]string{"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}, "a", ""},
		{"self", map[string][]string{"a": {"a"}}, "a", "a → a"},
		{"two", map[string][]string{"a": {"b"}, "b": {"a"}}, "a", "a → b → a"},
		{"three, reached from b", map[string][]string{"a": {"b"}, "b": {"c"}, "c": {"a"}}, "b", "b → c → a → b"},
		{"cycle further down", map[string][]string{"a": {"x", "b"}, "b": {"c"}, "c": {"b"}}, "a", "b → c → b"},
		{"missing dependency", map[string][]string{"a": {"gone"}}, "a", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CyclePath(FindCycle(tt.start, func(k string) []string { return tt.graph[k] }))
			if got != tt.want {
				t.Fatalf("FindCycle from %s = %q, want %q", tt.start, got, tt.want)
			}
		})
	}
}
