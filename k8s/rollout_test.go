package k8s

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func deploymentObj(name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": "shop", "labels": map[string]any{"app": "web"}},
		"spec":     spec,
	}}
}

func TestToRollout(t *testing.T) {
	selector := map[string]any{"matchLabels": map[string]any{"app": "web"}}
	template := map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": "shop:v1"}}}}
	tests := []struct {
		name     string
		spec     map[string]any
		wantSpec map[string]any
	}{
		{"replicas, selector and template, nothing else",
			map[string]any{"replicas": int64(3), "selector": selector, "template": template, "strategy": map[string]any{"type": "Recreate"}, "paused": true},
			map[string]any{"replicas": int64(3), "selector": selector, "template": template}},
		{"no replicas in git (an autoscaler sets them): none handed over",
			map[string]any{"selector": selector, "template": template},
			map[string]any{"selector": selector, "template": template}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &run{opts: Options{RolloutRef: "web-rollout"}}
			dep := deploymentObj("web", tt.spec)
			got, err := r.toRollout(dep)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"apiVersion": "kulta.io/v1alpha1", "kind": "Rollout",
				"metadata": map[string]any{"name": "web-rollout", "namespace": "shop"}, "spec": tt.wantSpec}
			if !reflect.DeepEqual(got.Object, want) {
				t.Errorf("toRollout = %v, want %v", got.Object, want)
			}
			got.Object["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"] = nil
			if dep.Object["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"] == nil {
				t.Error("the Rollout shares its fields with the Deployment")
			}
		})
	}
}

func TestToRolloutRefusesTwoDeployments(t *testing.T) {
	objs := []*unstructured.Unstructured{deploymentObj("web", nil), deploymentObj("api", nil), deploymentObj("web", nil)}
	objs[1].SetNamespace("")
	r := &run{opts: Options{RolloutRef: "web-rollout"}, deployments: deploymentsIn(objs)}
	_, err := r.toRollout(objs[0])
	if err == nil || !strings.Contains(err.Error(), "the repository has 2 (api, shop/web)") {
		t.Errorf("toRollout with two Deployments: %v, want an error naming both (the duplicate counted once)", err)
	}
}
