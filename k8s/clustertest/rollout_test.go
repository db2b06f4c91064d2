package clustertest

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

var rollouts = schema.GroupVersionResource{Group: "kulta.io", Version: "v1alpha1", Resource: "rollouts"}

func webDeployment(name, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {team: shop}}
    spec:
      containers: [{name: web, image: "%s", ports: [{containerPort: 8080}]}]
`, name, image)
}

const webService = `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`

// rolloutManifest is a Rollout as a platform team would create it: a
// canary strategy, and the placeholder template KULTA's CRD requires.
func rolloutManifest(name string) string {
	return `apiVersion: kulta.io/v1alpha1
kind: Rollout
metadata: {name: ` + name + `, labels: {team: platform}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: placeholder}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web
      steps: [{setWeight: 20}, {pause: {duration: 1m}}, {setWeight: 50}]
`
}

// createRollout creates the Rollout as the "user" (not ALUMIINI) would.
func createRollout(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	obj := load(t, map[string]string{"rollout.yaml": rolloutManifest(name)})[0]
	created, err := env.Dynamic.Resource(rollouts).Namespace(ns).Create(ctx(t), obj, metav1.CreateOptions{FieldManager: "kubectl-create"})
	if err != nil {
		t.Fatalf("create Rollout: %v", err)
	}
	return created
}

func getRollout(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	r, err := env.Dynamic.Resource(rollouts).Namespace(ns).Get(ctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Rollout %s/%s: %v", ns, name, err)
	}
	return r
}

func field(obj *unstructured.Unstructured, path ...string) any {
	v, _, _ := unstructured.NestedFieldNoCopy(obj.Object, path...)
	return v
}

func image(rollout *unstructured.Unstructured) string {
	containers, _, _ := unstructured.NestedSlice(rollout.Object, "spec", "template", "spec", "containers")
	if len(containers) == 0 {
		return ""
	}
	img, _ := containers[0].(map[string]any)["image"].(string)
	return img
}

// installRolloutCRD installs the test CRD for rollouts.kulta.io (the
// Applier waits until it is served) and removes it when t ends.
func installRolloutCRD(t *testing.T) {
	t.Helper()
	crd, err := os.ReadFile("testdata/kulta-rollout-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := newApplier(t).Apply(ctx(t), load(t, map[string]string{"crd.yaml": string(crd)}),
		k8s.Options{Owner: k8s.Owner{Namespace: "default", Name: "kulta"}})
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("install the Rollout CRD: %v %v", err, res.Failed)
	}
	t.Cleanup(func() {
		crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
		_ = env.Dynamic.Resource(crds).Delete(ctx(t), "rollouts.kulta.io", metav1.DeleteOptions{})
	})
}

func wantNoDeployments(t *testing.T, ns string) {
	t.Helper()
	list, err := env.Kube.AppsV1().Deployments(ns).List(ctx(t), metav1.ListOptions{})
	if err != nil || len(list.Items) > 0 {
		t.Errorf("Deployments in %s: %d, %v; want none", ns, len(list.Items), err)
	}
}

func wantFailure(t *testing.T, failed []k8s.ObjectError, what string, want ...string) {
	t.Helper()
	var msgs []string
	for _, f := range failed {
		msgs = append(msgs, f.Error())
	}
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0], what+": ") {
		t.Fatalf("failed = %q, want one failure of %s", msgs, what)
	}
	for _, w := range want {
		if !strings.Contains(msgs[0], w) {
			t.Errorf("failure %q, want it to say %q", msgs[0], w)
		}
	}
}

// withoutTemplate is a Rollout without its template and the metadata the
// API server updates on every change.
func withoutTemplate(r *unstructured.Unstructured) map[string]any {
	out := r.DeepCopy()
	unstructured.RemoveNestedField(out.Object, "spec", "template")
	for _, f := range []string{"resourceVersion", "generation", "managedFields"} {
		unstructured.RemoveNestedField(out.Object, "metadata", f)
	}
	return out.Object
}

// The subtests share one API server, where the Rollout CRD is absent for
// the first and installed for the others.
func TestRolloutRef(t *testing.T) {
	t.Run("no Rollout CRD", testNoRolloutCRD)
	installRolloutCRD(t)
	t.Run("hands the Deployment over", testHandover)
	t.Run("drift is checked on the Rollout", testRolloutDrift)
	t.Run("two Deployments", testTwoDeployments)
	t.Run("missing Rollout", testMissingRollout)
	t.Run("Rollout in the same repository", testRolloutInRepository)
	t.Run("turning rolloutRef on never prunes", testTurnOnKeepsDeployment)
}

func testNoRolloutCRD(t *testing.T) {
	ns := env.Namespace(t)
	res, err := newApplier(t).Apply(ctx(t), load(t, map[string]string{
		"web.yaml": webDeployment("web", "shop:v1"), "svc.yaml": webService, "cm.yaml": configMap("settings", "1"),
	}), k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true, RolloutRef: "web"})
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, res.Failed, "Deployment "+ns+"/web", "serves no kulta.io/v1alpha1 Rollout", "install KULTA")
	wantNames(t, "applied", res.Applied, "ConfigMap/settings", "Service/web")
	wantNoDeployments(t, ns)
}

func testHandover(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	before := createRollout(t, ns, "web-rollout")
	objs := load(t, map[string]string{
		"web.yaml": webDeployment("web", "shop:v1"), "svc.yaml": webService, "cm.yaml": configMap("settings", "1"),
	})
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true, RolloutRef: "web-rollout"}
	res, err := a.Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "applied", res.Applied, "ConfigMap/settings", "Service/web")
	wantNames(t, "inventory", res.Inventory, "ConfigMap/settings", "Service/web", "Deployment/web")
	want := []k8s.Handover{{Deployment: v1alpha1.ObjectRef{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: ns, Name: "web"},
		Rollout: ns + "/web-rollout"}}
	if !reflect.DeepEqual(res.HandedOver, want) {
		t.Errorf("handed over %+v, want %+v", res.HandedOver, want)
	}
	wantNoDeployments(t, ns)
	if _, err := env.Kube.CoreV1().Services(ns).Get(ctx(t), "web", metav1.GetOptions{}); err != nil {
		t.Errorf("Service web: %v", err)
	}

	after := getRollout(t, ns, "web-rollout")
	dep := objs[slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == "Deployment" })]
	for _, f := range []string{"replicas", "selector", "template"} {
		if got, want := field(after, "spec", f), field(dep, "spec", f); !reflect.DeepEqual(got, want) {
			t.Errorf("Rollout spec.%s = %v, want the Deployment's %v", f, got, want)
		}
	}
	if got, want := field(after, "spec", "strategy"), field(before, "spec", "strategy"); !reflect.DeepEqual(got, want) {
		t.Errorf("Rollout strategy = %v, want it untouched: %v", got, want)
	}
	if !reflect.DeepEqual(after.GetLabels(), before.GetLabels()) {
		t.Errorf("Rollout labels = %v, want only the user's %v", after.GetLabels(), before.GetLabels())
	}
	wantOwnsOnly(t, after, "alumiini-rollout", "f:replicas", "f:selector", "f:template")

	// A new image in git changes the Rollout's template and nothing else.
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
	objs = load(t, map[string]string{
		"web.yaml": webDeployment("web", "shop:v2"), "svc.yaml": webService, "cm.yaml": configMap("settings", "1"),
	})
	res, err = a.Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "applied", res.Applied)
	wantNames(t, "unchanged", res.Unchanged, "ConfigMap/settings", "Service/web")
	if len(res.HandedOver) != 1 {
		t.Errorf("handed over %+v, want the new template", res.HandedOver)
	}
	updated := getRollout(t, ns, "web-rollout")
	if image(updated) != "shop:v2" {
		t.Errorf("Rollout image %q, want shop:v2", image(updated))
	}
	if !reflect.DeepEqual(withoutTemplate(updated), withoutTemplate(after)) {
		t.Errorf("the new image changed more than the template:\nbefore %v\nafter  %v", withoutTemplate(after), withoutTemplate(updated))
	}
	wantNoDeployments(t, ns)

	// The same commit again: nothing is sent.
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
	res, err = a.Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNames(t, "unchanged", res.Unchanged, "ConfigMap/settings", "Service/web", "Deployment/web")
	if len(res.HandedOver) != 0 {
		t.Errorf("handed over %+v for an unchanged Deployment", res.HandedOver)
	}
}

// wantOwnsOnly checks that manager's server-side apply owns exactly the
// given fields of spec, and nothing in metadata or elsewhere.
func wantOwnsOnly(t *testing.T, obj *unstructured.Unstructured, manager string, specFields ...string) {
	t.Helper()
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager != manager {
			continue
		}
		var owned map[string]map[string]any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &owned); err != nil {
			t.Fatal(err)
		}
		var top, spec []string
		for k := range owned {
			top = append(top, k)
		}
		for k := range owned["f:spec"] {
			spec = append(spec, k)
		}
		slices.Sort(spec)
		if !slices.Equal(top, []string{"f:spec"}) || !slices.Equal(spec, specFields) {
			t.Errorf("%s owns %v, spec %v; want only spec %v", manager, top, spec, specFields)
		}
		return
	}
	t.Errorf("no managed fields of %q", manager)
}

func testRolloutDrift(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	createRollout(t, ns, "web-rollout")
	objs := load(t, map[string]string{"web.yaml": webDeployment("web", "shop:v1"), "cm.yaml": configMap("settings", "1")})
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true, RolloutRef: "web-rollout"}
	res, err := a.Apply(ctx(t), objs, opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("apply: %v %v", err, res.Failed)
	}
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes

	// The Deployment never exists, and is not missing.
	got, err := a.Drift(ctx(t), objs, opts, v1alpha1.DriftDetect)
	if err != nil || len(got.Drifted)+len(got.Missing)+len(got.Failed) > 0 {
		t.Fatalf("after the handover: %+v, %v; want no drift", got, err)
	}
	diffs, err := a.DryRun(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		if d.Action != "unchanged" || d.Err != nil {
			t.Errorf("dry run %s: %s %v, want unchanged", d.Ref.Kind, d.Action, d.Err)
		}
	}

	// Someone edits the Rollout's image by hand.
	live := getRollout(t, ns, "web-rollout")
	containers, _, _ := unstructured.NestedSlice(live.Object, "spec", "template", "spec", "containers")
	containers[0].(map[string]any)["image"] = "shop:hotfix"
	if err := unstructured.SetNestedSlice(live.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Dynamic.Resource(rollouts).Namespace(ns).Update(ctx(t), live, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	got, err = a.Drift(ctx(t), objs, opts, v1alpha1.DriftDetect)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, got.Failed)
	wantNames(t, "drifted", got.Drifted, "Deployment/web")
	wantNames(t, "missing", got.Missing)

	got, err = a.Drift(ctx(t), objs, opts, v1alpha1.DriftCorrect)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, got.Failed)
	wantNames(t, "corrected", got.Corrected, "Deployment/web")
	if img := image(getRollout(t, ns, "web-rollout")); img != "shop:v1" {
		t.Errorf("Rollout image %q after Correct, want git's shop:v1", img)
	}
	wantNoDeployments(t, ns)
}

func testTwoDeployments(t *testing.T) {
	ns := env.Namespace(t)
	createRollout(t, ns, "web-rollout")
	res, err := newApplier(t).Apply(ctx(t), load(t, map[string]string{
		"web.yaml": webDeployment("web", "shop:v1"), "api.yaml": webDeployment("api", "api:v1"), "cm.yaml": configMap("settings", "1"),
	}), k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true, RolloutRef: "web-rollout"})
	if err != nil {
		t.Fatal(err)
	}
	wantNames(t, "failed", refsOf(res.Failed), "Deployment/api", "Deployment/web")
	for _, f := range res.Failed {
		if msg := f.Error(); !strings.Contains(msg, "the repository has 2 (api, web)") || !strings.Contains(msg, "keep one Deployment") {
			t.Errorf("failure %q, want it to name both Deployments and say how to fix it", msg)
		}
	}
	wantNames(t, "applied", res.Applied, "ConfigMap/settings")
	wantNames(t, "inventory", res.Inventory, "ConfigMap/settings")
	if img := image(getRollout(t, ns, "web-rollout")); img != "placeholder" {
		t.Errorf("Rollout image %q, want it untouched", img)
	}
	wantNoDeployments(t, ns)
}

func refsOf(failed []k8s.ObjectError) []v1alpha1.ObjectRef {
	var refs []v1alpha1.ObjectRef
	for _, f := range failed {
		refs = append(refs, f.Ref)
	}
	return refs
}

func testMissingRollout(t *testing.T) {
	ns := env.Namespace(t)
	res, err := newApplier(t).Apply(ctx(t), load(t, map[string]string{
		"web.yaml": webDeployment("web", "shop:v1"), "cm.yaml": configMap("settings", "1"),
	}), k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true, RolloutRef: "absent"})
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, res.Failed, "Deployment "+ns+"/web", "Rollout "+ns+"/absent not found: create it with a strategy")
	wantNames(t, "applied", res.Applied, "ConfigMap/settings")
	if _, err := env.Dynamic.Resource(rollouts).Namespace(ns).Get(ctx(t), "absent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Rollout absent: %v, want it not created", err)
	}
	wantNoDeployments(t, ns)
}

func testRolloutInRepository(t *testing.T) {
	ns := env.Namespace(t)
	createRollout(t, ns, "web-rollout")
	res, err := newApplier(t).Apply(ctx(t), load(t, map[string]string{
		"web.yaml": webDeployment("web", "shop:v1"), "rollout.yaml": rolloutManifest("web-rollout"),
	}), k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true, RolloutRef: "web-rollout"})
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, res.Failed, "Rollout "+ns+"/web-rollout", "remove the Rollout from this repository")
	if len(res.HandedOver) != 1 || image(getRollout(t, ns, "web-rollout")) != "shop:v1" {
		t.Errorf("handed over %+v, want the Deployment handed over all the same", res.HandedOver)
	}
}

// A Deployment applied before rolloutRef was set stays as it was (deleting
// it would stop the application before KULTA runs it); it is pruned only
// when it leaves git, and the Rollout never is.
func testTurnOnKeepsDeployment(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, Prune: true}
	res, err := a.Apply(ctx(t), load(t, map[string]string{"web.yaml": webDeployment("web", "shop:v1"), "cm.yaml": configMap("settings", "1")}), opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("apply without rolloutRef: %v %v", err, res.Failed)
	}
	before, err := env.Kube.AppsV1().Deployments(ns).Get(ctx(t), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// rolloutRef is set, the manifest unchanged: the Rollout gets the
	// template (the content hash is of what is handed over), then a new
	// image; the Deployment is left as it was.
	createRollout(t, ns, "web-rollout")
	opts.RolloutRef = "web-rollout"
	for _, img := range []string{"shop:v1", "shop:v2"} {
		opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
		res, err = a.Apply(ctx(t), load(t, map[string]string{"web.yaml": webDeployment("web", img), "cm.yaml": configMap("settings", "1")}), opts)
		if err != nil {
			t.Fatal(err)
		}
		wantNoFailures(t, res.Failed)
		wantNames(t, "pruned", res.Pruned)
		wantNames(t, "inventory", res.Inventory, "ConfigMap/settings", "Deployment/web")
		if len(res.HandedOver) != 1 || image(getRollout(t, ns, "web-rollout")) != img {
			t.Errorf("handed over %+v, want %s in the Rollout", res.HandedOver, img)
		}
		live, err := env.Kube.AppsV1().Deployments(ns).Get(ctx(t), "web", metav1.GetOptions{})
		if err != nil || live.UID != before.UID || live.Generation != before.Generation {
			t.Fatalf("Deployment web after rolloutRef was set: %v; want it untouched", err)
		}
	}

	// The Deployment leaves git: the old Deployment is pruned, the Rollout stays.
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
	res, err = a.Apply(ctx(t), load(t, map[string]string{"cm.yaml": configMap("settings", "1")}), opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "pruned", res.Pruned, "Deployment/web")
	wantNames(t, "inventory", res.Inventory, "ConfigMap/settings")
	wantNoDeployments(t, ns)
	if image(getRollout(t, ns, "web-rollout")) != "shop:v2" {
		t.Error("the Rollout changed when the Deployment left git")
	}
}
