package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func TestSlimRepositoryKeepsWhatTheActorsRead(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "app", "namespace": "team", "managedFields": []any{map[string]any{"manager": "alumiini"}},
			"annotations": map[string]any{"alumiini.false.systems/requestedAt": "1"}},
		"spec":   map[string]any{"url": "https://h/r.git"},
		"status": map[string]any{"phase": "Synced", "lastHandledRequestedAt": "1", "inventory": []any{map[string]any{"kind": "ConfigMap"}}},
	}}
	out, err := slimRepository(u)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := out.(*v1alpha1.GitRepository)
	if !ok {
		t.Fatalf("slimRepository returned %T, want *v1alpha1.GitRepository", out)
	}
	if len(got.ManagedFields) != 0 {
		t.Error("managedFields kept")
	}
	if got.Status.Inventory != nil {
		t.Error("status.inventory kept")
	}
	if got.Status.LastHandledRequestedAt != "1" || got.Annotations["alumiini.false.systems/requestedAt"] != "1" {
		t.Error("the requestedAt handshake was dropped")
	}
	if got.Key() != "team/app" || got.Spec.URL != "https://h/r.git" || got.Status.Phase != v1alpha1.PhaseSynced {
		t.Errorf("converted %s: url %q phase %q", got.Key(), got.Spec.URL, got.Status.Phase)
	}
}

// TestSlimRepositoryLeavesWhatDoesNotConvert: an object that does not
// convert stays unstructured, for the watcher to report, slimmed still.
func TestSlimRepositoryLeavesWhatDoesNotConvert(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "app", "managedFields": []any{map[string]any{"manager": "alumiini"}}},
		"spec":     map[string]any{"url": 42},
	}}
	out, err := slimRepository(u)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := out.(*unstructured.Unstructured)
	if !ok || len(got.GetManagedFields()) != 0 {
		t.Fatalf("slimRepository returned %T %v, want the unstructured object without managedFields", out, out)
	}
}
