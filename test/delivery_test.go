package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// Issue 19: health-gated syncs, dependsOn, monorepos, one fetch per source.

// outcomes lists the outcomes of the pipelinerun.finished CDEvents of one
// GitRepository, in the order received.
func outcomes(recv *cdeventsReceiver, key string) []string {
	var out []string
	for _, ev := range recv.list() {
		subject, _ := ev.body["subject"].(map[string]any)
		id, _ := subject["id"].(string)
		content, _ := subject["content"].(map[string]any)
		if strings.HasPrefix(ev.ceType, "dev.cdevents.pipelinerun.finished.") && strings.HasPrefix(id, key+"/") {
			o, _ := content["outcome"].(string)
			out = append(out, o)
		}
	}
	return out
}

// eventsOf counts the CDEvents about one GitRepository.
func eventsOf(recv *cdeventsReceiver, key string) int {
	n := 0
	for _, ev := range recv.list() {
		subject, _ := ev.body["subject"].(map[string]any)
		if id, _ := subject["id"].(string); id == key || strings.HasPrefix(id, key+"/") {
			n++
		}
	}
	return n
}

// gizmoCRD installs a namespaced Gizmo kind with a status subresource and
// returns its resource in ns.
func gizmoCRD(t *testing.T, ns string) schema.GroupVersionResource {
	t.Helper()
	group := ns + ".example.com"
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "gizmos." + group},
		"spec": map[string]any{
			"group": group, "scope": "Namespaced",
			"names": map[string]any{"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := env.Dynamic.Resource(crds).Create(context.Background(), crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Dynamic.Resource(crds).Delete(context.Background(), "gizmos."+group, metav1.DeleteOptions{})
	})
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gizmos"}
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := env.Dynamic.Resource(gvr).Namespace(ns).List(context.Background(), metav1.ListOptions{})
		return err
	})
	return gvr
}

// setGizmoReady creates Gizmo name when missing and sets its Ready
// condition.
func setGizmoReady(t *testing.T, gvr schema.GroupVersionResource, ns, name, status string) {
	t.Helper()
	res := env.Dynamic.Resource(gvr).Namespace(ns)
	g, err := res.Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		g = &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": gvr.GroupVersion().String(), "kind": "Gizmo",
			"metadata": map[string]any{"name": name, "namespace": ns}, "spec": map[string]any{"size": int64(1)}}}
		g, err = res.Create(context.Background(), g, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	cond := map[string]any{"type": "Ready", "status": status, "reason": "Test", "message": "gizmo ready: " + status,
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}
	if err := unstructured.SetNestedSlice(g.Object, []any{cond}, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	if _, err := res.UpdateStatus(context.Background(), g, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readyCondition(repo *v1alpha1.GitRepository) metav1.Condition {
	if c := meta.FindStatusCondition(repo.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// TestWaitGatesReadyOnHealthyObjects: with spec.wait, a sync is Synced only
// once its objects are Current (kstatus); a Deployment that never becomes
// available (the control plane runs no controllers) fails the sync by name
// after spec.timeout, and the CDEvent outcome follows.
func TestWaitGatesReadyOnHealthyObjects(t *testing.T) {
	ns := env.Namespace(t)
	gizmos := gizmoCRD(t, ns)
	// The Gizmo exists, not Ready, before the repository takes it over.
	setGizmoReady(t, gizmos, ns, "g", "False")
	repo := gitserver.New(t).CreateRepo(t, "health")
	first := repo.CommitStrings("first", map[string]string{
		"ready/gizmo.yaml": fmt.Sprintf("apiVersion: %s\nkind: Gizmo\nmetadata: {name: g, namespace: %s}\nspec: {size: 2}\n", gizmos.GroupVersion(), ns),
		"ready/cm.yaml":    configMapYAML("settings", ns, "1"),
		"stuck/deploy.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %s}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.invalid/web:1}]}
`, ns),
	})
	recv := newReceiver(t)
	ctrl := startController(t, "--cdevents-sink", recv.srv.URL, "--watch-namespace", ns)
	ctrl.waitReady(t)

	createRepo(t, ns, "ready", map[string]any{"url": repo.URL(), "path": "ready", "wait": true, "timeout": "2m", "interval": "1h"})
	testenv.Eventually(t, 60*time.Second, func() error {
		r := getRepo(t, ns, "ready")
		if r.Status.Phase != v1alpha1.PhaseSyncing || !strings.Contains(r.Status.Message, "Gizmo "+ns+"/g") {
			return fmt.Errorf("phase %s, message %q; want Syncing, waiting for the Gizmo", r.Status.Phase, r.Status.Message)
		}
		return nil
	})
	if v, _ := configMapValue(ns, "settings"); v != "1" {
		t.Fatal("the objects were not applied before the wait")
	}
	setGizmoReady(t, gizmos, ns, "g", "True")
	ready := waitPhase(t, ns, "ready", v1alpha1.PhaseSynced, first, 30*time.Second)
	if c := readyCondition(ready); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "healthy") {
		t.Fatalf("Ready condition %+v, want True saying the objects are healthy", c)
	}

	createRepo(t, ns, "stuck", map[string]any{"url": repo.URL(), "path": "stuck", "wait": true, "timeout": "3s", "interval": "1h"})
	stuck := waitPhase(t, ns, "stuck", v1alpha1.PhaseFailed, first, 60*time.Second)
	c := readyCondition(stuck)
	if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "Deployment "+ns+"/web") || stuck.Status.LastSyncedCommit == first {
		t.Fatalf("stuck: Ready %+v, lastSyncedCommit %q; want False naming Deployment %s/web, the commit not recorded as synced", c, stuck.Status.LastSyncedCommit, ns)
	}
	if len(stuck.Status.Inventory) != 1 {
		t.Fatalf("stuck: inventory %+v, want the applied Deployment (it must stay prunable)", stuck.Status.Inventory)
	}
	t.Log(c.Message)

	testenv.Eventually(t, 10*time.Second, func() error {
		if got := outcomes(recv, ns+"/ready"); len(got) == 0 || got[0] != "success" {
			return fmt.Errorf("ready: outcomes %v, want success", got)
		}
		if got := outcomes(recv, ns+"/stuck"); len(got) == 0 || got[0] != "failure" {
			return fmt.Errorf("stuck: outcomes %v, want failure", got)
		}
		return nil
	})
}

// TestDependsOnWaitsAndWakes: a repository applies only once the one it
// depends on is Ready, says which it waits for, is woken by that one's
// becoming Ready (its own poll interval is an hour), and a cycle is
// refused naming it.
func TestDependsOnWaitsAndWakes(t *testing.T) {
	ns := env.Namespace(t)
	srv := gitserver.New(t)
	crds := srv.CreateRepo(t, "crds")
	crdsFirst := crds.CommitStrings("first", map[string]string{"cm.yaml": configMapYAML("platform", ns, "1")})
	apps := srv.CreateRepo(t, "apps")
	appsFirst := apps.CommitStrings("first", map[string]string{"cm.yaml": configMapYAML("app", ns, "1")})
	ctrl := startController(t, "--watch-namespace", ns)
	ctrl.waitReady(t)

	createRepo(t, ns, "apps", map[string]any{"url": apps.URL(), "interval": "1h", "reconcileInterval": "1h",
		"dependsOn": []any{map[string]any{"name": "platform"}}})
	testenv.Eventually(t, 30*time.Second, func() error {
		r := getRepo(t, ns, "apps")
		if !strings.Contains(r.Status.Message, ns+"/platform") || r.Status.Phase == v1alpha1.PhaseSynced {
			return fmt.Errorf("phase %s, message %q; want it to wait for %s/platform", r.Status.Phase, r.Status.Message, ns)
		}
		return nil
	})
	if v, _ := configMapValue(ns, "app"); v != "" {
		t.Fatal("the dependent applied before its dependency exists")
	}

	createRepo(t, ns, "platform", map[string]any{"url": crds.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "platform", v1alpha1.PhaseSynced, crdsFirst, 60*time.Second)
	// Woken by the dependency's status: no poll would come within the hour.
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, appsFirst, 20*time.Second)
	if v, _ := configMapValue(ns, "app"); v != "1" {
		t.Fatalf("ConfigMap app = %q after the dependent synced", v)
	}

	createRepo(t, ns, "x", map[string]any{"url": apps.URL(), "interval": "1h", "dependsOn": []any{map[string]any{"name": "y"}}})
	createRepo(t, ns, "y", map[string]any{"url": apps.URL(), "interval": "1h", "dependsOn": []any{map[string]any{"name": "x", "namespace": ns}}})
	testenv.Eventually(t, 30*time.Second, func() error {
		r := getRepo(t, ns, "x")
		want := ns + "/x → " + ns + "/y → " + ns + "/x"
		if r.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(r.Status.Message, want) {
			return fmt.Errorf("phase %s, message %q; want Failed naming the cycle %s", r.Status.Phase, r.Status.Message, want)
		}
		return nil
	})
}

// TestMonorepoCommitsOutsideTheInputsAreOnlyRecorded: two repositories of
// one monorepo; a commit that touches only one of them (or a kustomize base
// only one of them reads) applies that one, while the other records the
// commit as seen with no apply, Event or CDEvent. The shared source fetches
// each commit once.
func TestMonorepoCommitsOutsideTheInputsAreOnlyRecorded(t *testing.T) {
	ns := env.Namespace(t)
	srv := gitserver.New(t)
	mono := srv.CreateRepo(t, "mono")
	first := mono.CommitStrings("first", map[string]string{
		"apps/a/kustomization.yaml":    "resources: [../../bases/web, a.yaml]\n",
		"apps/a/a.yaml":                configMapYAML("a", ns, "1"),
		"bases/web/kustomization.yaml": "resources: [web.yaml]\n",
		"bases/web/web.yaml":           configMapYAML("web", ns, "1"),
		"apps/b/b.yaml":                configMapYAML("b", ns, "1"),
		"README.md":                    "monorepo\n",
	})
	recv := newReceiver(t)
	ctrl := startController(t, "--cdevents-sink", recv.srv.URL, "--watch-namespace", ns)
	ctrl.waitReady(t)
	for _, name := range []string{"a", "b"} {
		createRepo(t, ns, name, map[string]any{"url": mono.URL(), "path": "apps/" + name, "interval": "1s", "reconcileInterval": "1h"})
	}
	waitPhase(t, ns, "a", v1alpha1.PhaseSynced, first, 60*time.Second)
	waitPhase(t, ns, "b", v1alpha1.PhaseSynced, first, 60*time.Second)
	_, rvA := configMapValue(ns, "a")
	_, rvWeb := configMapValue(ns, "web")
	beforeA := getRepo(t, ns, "a")
	eventsA, cdeventsA := len(eventReasons(t, ns, "a")), eventsOf(recv, ns+"/a")
	packs := srv.UploadPacks()

	// Touches b only.
	second := mono.CommitStrings("b only", map[string]string{"apps/b/b.yaml": configMapYAML("b", ns, "2"), "README.md": "changed\n"})
	waitPhase(t, ns, "b", v1alpha1.PhaseSynced, second, 30*time.Second)
	afterA := waitPhase(t, ns, "a", v1alpha1.PhaseSynced, second, 30*time.Second)
	if _, rv := configMapValue(ns, "a"); rv != rvA {
		t.Fatal("a's objects were applied for a commit that does not touch them")
	}
	if !afterA.Status.LastSyncTime.Equal(beforeA.Status.LastSyncTime) || afterA.Status.Message != beforeA.Status.Message {
		t.Fatalf("a's status changed beyond the commit: %+v → %+v", beforeA.Status, afterA.Status)
	}
	if n := len(eventReasons(t, ns, "a")); n != eventsA {
		t.Fatalf("a got %d new Event(s) for an unrelated commit", n-eventsA)
	}
	if n := eventsOf(recv, ns+"/a"); n != cdeventsA {
		t.Fatalf("a sent %d new CDEvent(s) for an unrelated commit", n-cdeventsA)
	}
	if got := srv.UploadPacks() - packs; got != 1 {
		t.Fatalf("the new commit was fetched %d times for two repositories of one source, want once", got)
	}

	// Touches the base that only a's kustomization reads.
	third := mono.CommitStrings("base", map[string]string{"bases/web/web.yaml": configMapYAML("web", ns, "3")})
	waitPhase(t, ns, "a", v1alpha1.PhaseSynced, third, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if v, rv := configMapValue(ns, "web"); v != "3" || rv == rvWeb {
			return fmt.Errorf("ConfigMap web = %q, want 3 from the base", v)
		}
		return nil
	})
}

// TestOneSourceForManyRepositories: GitRepositories naming one URL share
// one ref listing per interval and one fetch per commit, and one webhook
// syncs all of them.
func TestOneSourceForManyRepositories(t *testing.T) {
	const n = 12
	ns := env.Namespace(t)
	srv := gitserver.New(t)
	mono := srv.CreateRepo(t, "mono")
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("apps/%d/cm.yaml", i)] = configMapYAML(fmt.Sprintf("cm-%d", i), ns, "1")
	}
	first := mono.CommitStrings("first", files)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns)
	ctrl.waitReady(t)
	for i := range n {
		createRepo(t, ns, fmt.Sprintf("app-%d", i), map[string]any{"url": mono.URL(), "path": fmt.Sprintf("apps/%d", i),
			"interval": "3s", "reconcileInterval": "1h"})
	}
	for i := range n {
		waitPhase(t, ns, fmt.Sprintf("app-%d", i), v1alpha1.PhaseSynced, first, 60*time.Second)
	}

	// Quiet: twelve repositories polling every 3s for 9s cost a listing
	// per interval or so, not one per repository and poll.
	listings, packs := srv.RefAdvertisements(), srv.UploadPacks()
	window := time.Now()
	testenv.Eventually(t, 20*time.Second, func() error {
		if time.Since(window) < 9*time.Second {
			return fmt.Errorf("observing")
		}
		return nil
	})
	quiet := srv.RefAdvertisements() - listings
	if quiet > 5 || srv.UploadPacks() != packs {
		t.Fatalf("9s of quiet polls of %d repositories at 3s cost %d listings and %d packs; want at most 5 listings (one per interval, plus edges) and no pack",
			n, quiet, srv.UploadPacks()-packs)
	}
	t.Logf("quiet: %d ref listings in 9s for %d repositories polling every 3s", quiet, n)

	// Polls an hour apart from now on, so that only the webhook can sync
	// what comes next.
	for i := range n {
		name := fmt.Sprintf("app-%d", i)
		patch := []byte(`{"spec":{"interval":"1h"}}`)
		if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).
			Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		testenv.Eventually(t, 30*time.Second, func() error {
			r := getRepo(t, ns, fmt.Sprintf("app-%d", i))
			if r.Status.ObservedGeneration != r.Generation || r.Status.Phase != v1alpha1.PhaseSynced {
				return fmt.Errorf("%s: observed generation %d of %d, phase %s", r.Name, r.Status.ObservedGeneration, r.Generation, r.Status.Phase)
			}
			return nil
		})
	}

	// One webhook: every repository syncs the commit; it is fetched once.
	files = map[string]string{}
	for i := range n {
		files[fmt.Sprintf("apps/%d/cm.yaml", i)] = configMapYAML(fmt.Sprintf("cm-%d", i), ns, "2")
	}
	second := mono.CommitStrings("second", files)
	packs = srv.UploadPacks()
	if code, body := pushGitHub(t, ctrl.webhook, mono.URL(), second); code != http.StatusAccepted {
		t.Fatalf("webhook reply %d %s", code, body)
	}
	for i := range n {
		waitPhase(t, ns, fmt.Sprintf("app-%d", i), v1alpha1.PhaseSynced, second, 20*time.Second)
	}
	if got := srv.UploadPacks() - packs; got != 1 {
		t.Fatalf("the pushed commit was fetched %d times for %d repositories, want once", got, n)
	}
}
