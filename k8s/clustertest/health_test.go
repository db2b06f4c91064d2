package clustertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/k8s"
)

// The control plane runs no controllers: a Deployment's status stays empty,
// so it never becomes available, while a ConfigMap is Current at once.
func TestWaitHealthyNamesADeploymentThatNeverBecomesAvailable(t *testing.T) {
	ns := env.Namespace(t)
	objs := load(t, map[string]string{
		"cm.yaml": configMap("settings", "1"),
		"deploy.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.invalid/web:1}]}
`,
	})
	a := newApplier(t)
	res, err := a.Apply(ctx(t), objs, k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, TargetNamespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)

	wait, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	var first []k8s.Unhealthy
	bad, _ := a.WaitHealthy(wait, res.Inventory, k8s.Options{}, func(u []k8s.Unhealthy) { first = append(first, u...) })
	if took := time.Since(start); took < time.Second || took > 10*time.Second {
		t.Errorf("WaitHealthy returned after %v, want it to wait until the 1.5s deadline", took)
	}
	if len(bad) != 1 || bad[0].Ref.Kind != "Deployment" || bad[0].Ref.Name != "web" || bad[0].Status != "InProgress" {
		t.Fatalf("unhealthy = %+v, want only Deployment web, InProgress", bad)
	}
	if len(first) != 1 || first[0].Ref.Name != "web" {
		t.Fatalf("waiting heard %+v, want the Deployment once", first)
	}
	msg := k8s.HealthMessage(bad)
	if !strings.Contains(msg, "Deployment "+ns+"/web is InProgress") {
		t.Fatalf("HealthMessage = %q, want it to name the Deployment and its status", msg)
	}
	t.Log(msg)
}

// A custom resource with a Ready condition is healthy once Ready is True;
// kstatus reads the condition because the CRD is unknown to it.
func TestWaitHealthyFollowsACustomResourcesReadyCondition(t *testing.T) {
	ns := env.Namespace(t)
	group := ns + ".example.com"
	objs := load(t, map[string]string{
		"crd.yaml": fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gizmos.%s}
spec:
  group: %s
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo, listKind: GizmoList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`, group, group),
		"gizmo.yaml": fmt.Sprintf("apiVersion: %s/v1\nkind: Gizmo\nmetadata: {name: g}\nspec: {size: 1}\n", group),
	})
	a := newApplier(t)
	res, err := a.Apply(ctx(t), objs, k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, TargetNamespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	gizmos := env.Dynamic.Resource(schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gizmos"}).Namespace(ns)
	setReady := func(status string) {
		t.Helper()
		g, err := gizmos.Get(ctx(t), "g", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cond := map[string]any{"type": "Ready", "status": status, "reason": "Test", "message": "gizmo is " + status,
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}
		if err := unstructured.SetNestedSlice(g.Object, []any{cond}, "status", "conditions"); err != nil {
			t.Fatal(err)
		}
		if _, err := gizmos.UpdateStatus(ctx(t), g, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	setReady("False")
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if bad, _ := a.WaitHealthy(short, res.Inventory, k8s.Options{}, nil); len(bad) != 1 || bad[0].Ref.Kind != "Gizmo" || !strings.Contains(bad[0].Message, "gizmo is False") {
		t.Fatalf("with Ready=False: unhealthy = %+v, want the Gizmo with its condition's message", bad)
	}

	done := make(chan []k8s.Unhealthy, 1)
	long, cancelLong := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelLong()
	go func() { bad, _ := a.WaitHealthy(long, res.Inventory, k8s.Options{}, nil); done <- bad }()
	setReady("True")
	select {
	case bad := <-done:
		if bad != nil {
			t.Fatalf("after Ready=True: unhealthy = %+v, want none", bad)
		}
		if long.Err() != nil {
			t.Fatal("WaitHealthy returned only at its deadline")
		}
	case <-time.After(40 * time.Second):
		t.Fatal("WaitHealthy did not return")
	}
}
