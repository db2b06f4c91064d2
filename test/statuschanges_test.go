package test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// repoStatuses reads the status of every GitRepository in ns, by name: the
// scale harness compares two readings to say what a window's status writes
// changed.
func repoStatuses(b *testing.B, ns string) map[string]v1alpha1.GitRepositoryStatus {
	b.Helper()
	list, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.Fatalf("list GitRepositories: %v", err)
	}
	out := make(map[string]v1alpha1.GitRepositoryStatus, len(list.Items))
	for i := range list.Items {
		var r v1alpha1.GitRepository
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &r); err != nil {
			b.Fatalf("decode GitRepository %s: %v", list.Items[i].GetName(), err)
		}
		out[r.Name] = r.Status
	}
	return out
}

// eventTally counts the Kubernetes Events in ns by type and reason
// ("Warning DriftCheckFailed"), with the repeats the recorder folded into
// one Event, and keeps the latest message of each: what the controller
// reported during a run, within the API server's --event-ttl (1h by
// default): older Events are gone.
func eventTally(b *testing.B, ns string) (map[string]int, map[string]string) {
	b.Helper()
	list, err := env.Kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.Fatalf("list Events: %v", err)
	}
	counts, examples := map[string]int{}, map[string]string{}
	latest := map[string]*corev1.Event{}
	for i := range list.Items {
		e := &list.Items[i]
		key := e.Type + " " + e.Reason
		counts[key] += max(int(e.Count), 1)
		if l := latest[key]; l == nil || l.LastTimestamp.Before(&e.LastTimestamp) {
			latest[key] = e
		}
	}
	for key, e := range latest {
		examples[key] = e.InvolvedObject.Name + ": " + e.Message
	}
	return counts, examples
}

// statusChanges counts, over the repositories in both readings, what
// changed in their status (statusDiff's names).
func statusChanges(before, after map[string]v1alpha1.GitRepositoryStatus) map[string]int {
	out := map[string]int{}
	for name, a := range after {
		bf, ok := before[name]
		if !ok {
			continue
		}
		for _, c := range statusDiff(bf, a) {
			out[c]++
		}
	}
	return out
}

// statusDiff names what differs between two statuses of one repository:
// a top-level field by its JSON name; a condition by its type and its
// status and reason before and after ("condition Drifted: True/CheckFailed
// → False/InSync"), or, when those stayed, what else moved ("condition
// Drifted: False/InSync (generation)").
func statusDiff(before, after v1alpha1.GitRepositoryStatus) []string {
	var out []string
	bv, av := reflect.ValueOf(before), reflect.ValueOf(after)
	for i := range bv.NumField() {
		f := bv.Type().Field(i)
		if f.Name == "Conditions" {
			continue
		}
		if !reflect.DeepEqual(bv.Field(i).Interface(), av.Field(i).Interface()) {
			out = append(out, strings.Split(f.Tag.Get("json"), ",")[0])
		}
	}
	var types []string // in order: before's, then those added
	for _, c := range before.Conditions {
		types = append(types, c.Type)
	}
	for _, c := range after.Conditions {
		if meta.FindStatusCondition(before.Conditions, c.Type) == nil {
			types = append(types, c.Type)
		}
	}
	for _, typ := range types {
		b, a := meta.FindStatusCondition(before.Conditions, typ), meta.FindStatusCondition(after.Conditions, typ)
		if reflect.DeepEqual(b, a) {
			continue
		}
		desc := fmt.Sprintf("condition %s: %s → %s", typ, conditionState(b), conditionState(a))
		if b != nil && a != nil && conditionState(b) == conditionState(a) {
			desc = fmt.Sprintf("condition %s: %s (%s)", typ, conditionState(a), conditionMoved(*b, *a))
		}
		out = append(out, desc)
	}
	return out
}

func conditionState(c *metav1.Condition) string {
	if c == nil {
		return "absent"
	}
	return string(c.Status) + "/" + c.Reason
}

// conditionMoved names what changed in a condition whose status and reason
// did not.
func conditionMoved(b, a metav1.Condition) string {
	var moved []string
	if b.ObservedGeneration != a.ObservedGeneration {
		moved = append(moved, "generation")
	}
	if b.Message != a.Message {
		moved = append(moved, "message")
	}
	if !b.LastTransitionTime.Equal(&a.LastTransitionTime) {
		moved = append(moved, "transition time")
	}
	return strings.Join(moved, ", ")
}

func TestStatusDiffNamesWhatChanged(t *testing.T) {
	drifted := func(status metav1.ConditionStatus, reason string, gen int64) v1alpha1.GitRepositoryStatus {
		return v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhaseSynced, Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionDrifted, Status: status, Reason: reason, ObservedGeneration: gen}}}
	}
	for _, tc := range []struct {
		name          string
		before, after v1alpha1.GitRepositoryStatus
		want          []string
	}{
		{"same", drifted("False", "InSync", 1), drifted("False", "InSync", 1), nil},
		{"flipped", drifted("True", "CheckFailed", 1), drifted("False", "InSync", 1),
			[]string{"condition Drifted: True/CheckFailed → False/InSync"}},
		{"generation only", drifted("False", "InSync", 1), drifted("False", "InSync", 2),
			[]string{"condition Drifted: False/InSync (generation)"}},
		{"added", v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhaseSynced}, drifted("False", "InSync", 1),
			[]string{"condition Drifted: absent → False/InSync"}},
		{"field", v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhasePending}, v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhaseSynced},
			[]string{"phase"}},
		{"two conditions, in order", v1alpha1.GitRepositoryStatus{Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: "True", Reason: "Applied"}, {Type: v1alpha1.ConditionDrifted, Status: "False", Reason: "InSync"}}},
			v1alpha1.GitRepositoryStatus{Conditions: []metav1.Condition{
				{Type: v1alpha1.ConditionDrifted, Status: "True", Reason: "DriftDetected"}, {Type: v1alpha1.ConditionReady, Status: "False", Reason: "FetchFailed"}}},
			[]string{"condition Ready: True/Applied → False/FetchFailed", "condition Drifted: False/InSync → True/DriftDetected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusDiff(tc.before, tc.after); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("statusDiff = %q, want %q", got, tc.want)
			}
		})
	}
}
