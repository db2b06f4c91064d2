package v1alpha1

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Key is the namespace/name a reference names; an empty namespace is the
// dependent's own.
func (d DependencyReference) Key(dependentNamespace string) string {
	ns := d.Namespace
	if ns == "" {
		ns = dependentNamespace
	}
	return ns + "/" + d.Name
}

// DependencyKeys are the keys (namespace/name) of spec.dependsOn, in order,
// without duplicates.
func (g *GitRepository) DependencyKeys() []string {
	keys := make([]string, 0, len(g.Spec.DependsOn))
	seen := make(map[string]bool, len(g.Spec.DependsOn))
	for _, d := range g.Spec.DependsOn {
		if k := d.Key(g.Namespace); !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// DependsOn reports whether spec.dependsOn names key.
func (g *GitRepository) DependsOn(key string) bool {
	for _, d := range g.Spec.DependsOn {
		if d.Key(g.Namespace) == key {
			return true
		}
	}
	return false
}

// DependencyReady reports whether dep, a GitRepository that another depends
// on, is Ready at its latest commit: its current spec synced, its last
// attempt applied, nothing in progress. When it is not, the reason is a
// phrase that completes "waiting for <key>, which ...".
func DependencyReady(dep *GitRepository) (bool, string) {
	st := dep.Status
	ready := meta.FindStatusCondition(st.Conditions, ConditionReady)
	reconciling := meta.IsStatusConditionTrue(st.Conditions, ConditionReconciling)
	switch {
	case st.ObservedGeneration != dep.Generation || (ready != nil && ready.ObservedGeneration != dep.Generation):
		return false, fmt.Sprintf("has not synced its generation %d yet", dep.Generation)
	case st.Phase == PhaseFailed:
		return false, "failed: " + strings.TrimSuffix(st.Message, ".")
	case st.Phase == PhaseSyncing || reconciling:
		return false, "is syncing"
	case st.Phase != PhaseSynced:
		return false, fmt.Sprintf("is %s, not Synced", phaseOrPending(st.Phase))
	case ready == nil || ready.Status != metav1.ConditionTrue:
		return false, "is not Ready"
	case st.LastAttemptedCommit != "" && st.LastAttemptedCommit != st.LastSyncedCommit:
		return false, fmt.Sprintf("has not applied its latest commit %s yet", shortSHA(st.LastAttemptedCommit))
	}
	return true, ""
}

func phaseOrPending(p Phase) Phase {
	if p == "" {
		return PhasePending
	}
	return p
}

func shortSHA(c string) string {
	if len(c) > 7 {
		return c[:7]
	}
	return c
}

// FindCycle follows dependsOn from start, depth first and in the listed
// order, and returns the first cycle it reaches as a path whose first and
// last keys are the same (a → b → a); nil when there is none. deps gives
// the dependency keys of a GitRepository, nil for one that does not exist.
func FindCycle(start string, deps func(key string) []string) []string {
	onPath := map[string]int{} // key → index in path
	done := map[string]bool{}
	var path []string
	var visit func(key string) []string
	visit = func(key string) []string {
		if i, ok := onPath[key]; ok {
			return append(append([]string(nil), path[i:]...), key)
		}
		if done[key] {
			return nil
		}
		onPath[key] = len(path)
		path = append(path, key)
		for _, d := range deps(key) {
			if c := visit(d); c != nil {
				return c
			}
		}
		path = path[:len(path)-1]
		delete(onPath, key)
		done[key] = true
		return nil
	}
	return visit(start)
}

// CyclePath formats a cycle for messages: "ns/a → ns/b → ns/a".
func CyclePath(cycle []string) string { return strings.Join(cycle, " → ") }
