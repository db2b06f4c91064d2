package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

var rollouts = schema.GroupVersionResource{Group: "kulta.io", Version: "v1alpha1", Resource: "rollouts"}

func deploymentYAML(ns, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %s}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: %q}]
`, ns, image)
}

// TestRolloutRefThroughTheController: with spec.rolloutRef the binary hands
// the Deployment's template to the KULTA Rollout, applies the rest, creates
// no Deployment, and emits a handover CDEvent (issue 11).
func TestRolloutRefThroughTheController(t *testing.T) {
	ctx := context.Background()
	crds, errs := k8s.LoadManifests(filepath.Join(testenv.RepoRoot(), "k8s", "clustertest", "testdata"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	applier, err := k8s.NewApplier(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := applier.Apply(ctx, crds, k8s.Options{Owner: k8s.Owner{Namespace: "kulta-test", Name: "crd"}}); err != nil || len(res.Failed) > 0 {
		t.Fatalf("install the Rollout CRD: %v %v", err, res.Failed)
	}
	ns := env.Namespace(t)
	rollout := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kulta.io/v1alpha1", "kind": "Rollout",
		"metadata": map[string]any{"name": "web", "namespace": ns},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"strategy": map[string]any{"canary": map[string]any{"steps": []any{map[string]any{"setWeight": int64(20)}}}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": "placeholder"}}}},
		},
	}}
	if _, err := env.Dynamic.Resource(rollouts).Namespace(ns).Create(ctx, rollout, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	git := gitserver.New(t)
	repo := git.CreateRepo(t, "apps")
	first := repo.CommitStrings("first", map[string]string{
		"deploy.yaml": deploymentYAML(ns, "shop:v1"),
		"cm.yaml":     configMapYAML("settings", ns, "1"),
	})
	recv := newReceiver(t)
	ctrl := startController(t, "--cdevents-sink", recv.srv.URL, "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h",
		"rolloutRef": map[string]any{"name": "web"}})
	synced := waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)
	if !strings.Contains(synced.Status.Message, "handed to a Rollout") {
		t.Fatalf("status does not report the handover: %q", synced.Status.Message)
	}
	if v, _ := configMapValue(ns, "settings"); v != "1" {
		t.Fatal("the ConfigMap was not applied")
	}
	if _, err := env.Kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a Deployment exists (err %v): it should have gone to the Rollout", err)
	}
	live, err := env.Dynamic.Resource(rollouts).Namespace(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	containers, _, _ := unstructured.NestedSlice(live.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 || containers[0].(map[string]any)["image"] != "shop:v1" {
		t.Fatalf("Rollout template containers = %v, want image shop:v1", containers)
	}
	if steps, _, _ := unstructured.NestedSlice(live.Object, "spec", "strategy", "canary", "steps"); len(steps) != 1 {
		t.Fatalf("the Rollout's strategy was touched: %v", live.Object["spec"])
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, ev := range recv.list() {
			if strings.HasPrefix(ev.ceType, "dev.cdeventsx.alumiini-rollout.handedover.") {
				return nil
			}
		}
		return fmt.Errorf("no handover CDEvent among %d events", len(recv.list()))
	})
}
