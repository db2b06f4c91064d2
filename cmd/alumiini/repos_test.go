package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestSlimRepositoryKeepsWhatTheActorsRead(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "app", "managedFields": []any{map[string]any{"manager": "alumiini"}},
			"annotations": map[string]any{"alumiini.false.systems/requestedAt": "1"}},
		"spec":   map[string]any{"url": "https://h/r.git"},
		"status": map[string]any{"phase": "Synced", "lastHandledRequestedAt": "1", "inventory": []any{map[string]any{"kind": "ConfigMap"}}},
	}}
	out, err := slimRepository(u)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*unstructured.Unstructured)
	if len(got.GetManagedFields()) != 0 {
		t.Error("managedFields kept")
	}
	if _, found, _ := unstructured.NestedSlice(got.Object, "status", "inventory"); found {
		t.Error("status.inventory kept")
	}
	if at, _, _ := unstructured.NestedString(got.Object, "status", "lastHandledRequestedAt"); at != "1" || got.GetAnnotations()["alumiini.false.systems/requestedAt"] != "1" {
		t.Error("the requestedAt handshake was dropped")
	}
}
