package clustertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func newApplier(t *testing.T) *k8s.Applier {
	t.Helper()
	a, err := k8s.NewApplier(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// load writes files to a directory and loads them like a checkout.
func load(t testing.TB, files map[string]string) []*unstructured.Unstructured {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, errs := k8s.LoadManifests(dir)
	if len(errs) > 0 {
		t.Fatalf("load manifests: %v", errs)
	}
	return objs
}

func configMap(name, value string, annotations ...string) string {
	s := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n"
	if len(annotations) > 0 {
		s += "  annotations:\n"
		for _, a := range annotations {
			s += "    " + a + "\n"
		}
	}
	return s + "data:\n  key: \"" + value + "\"\n"
}

// names lists refs as Kind/name, sorted.
func names(refs []v1alpha1.ObjectRef) []string {
	out := []string{}
	for _, r := range refs {
		out = append(out, r.Kind+"/"+r.Name)
	}
	slices.Sort(out)
	return out
}

func wantNames(t *testing.T, what string, refs []v1alpha1.ObjectRef, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := names(refs); !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func wantNoFailures(t *testing.T, failed []k8s.ObjectError) {
	t.Helper()
	for _, f := range failed {
		t.Errorf("unexpected failure: %v", f)
	}
}

func getCM(t *testing.T, ns, name string) (*corev1.ConfigMap, error) {
	t.Helper()
	return env.Kube.CoreV1().ConfigMaps(ns).Get(ctx(t), name, metav1.GetOptions{})
}

func TestCreateUpdatePruneAcrossCommits(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "shop"}, TargetNamespace: ns, Prune: true}

	// Commit 1: four objects.
	res, err := a.Apply(ctx(t), load(t, map[string]string{
		"a.yaml": configMap("a", "v1"),
		"b.yaml": configMap("b", "v1"),
		"c.yaml": configMap("c", "v1"),
		"d.yaml": configMap("d", "v1", v1alpha1.AnnotationPrune+": "+v1alpha1.PruneDisabled),
	}), opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "applied", res.Applied, "ConfigMap/a", "ConfigMap/b", "ConfigMap/c", "ConfigMap/d")
	wantNames(t, "inventory", res.Inventory, "ConfigMap/a", "ConfigMap/b", "ConfigMap/c", "ConfigMap/d")
	live, err := getCM(t, ns, "a")
	if err != nil {
		t.Fatal(err)
	}
	if live.Labels[v1alpha1.LabelName] != "shop" || live.Labels[v1alpha1.LabelNamespace] != ns {
		t.Errorf("labels %v, want ownership labels", live.Labels)
	}
	if !slices.ContainsFunc(live.ManagedFields, func(f metav1.ManagedFieldsEntry) bool {
		return f.Manager == v1alpha1.FieldManager && f.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("managed fields %v, want a server-side apply by %q", live.ManagedFields, v1alpha1.FieldManager)
	}

	// Commit 2: a changes; the others are not sent again.
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
	res, err = a.Apply(ctx(t), load(t, map[string]string{
		"a.yaml": configMap("a", "v2"),
		"b.yaml": configMap("b", "v1"),
		"c.yaml": configMap("c", "v1"),
		"d.yaml": configMap("d", "v1", v1alpha1.AnnotationPrune+": "+v1alpha1.PruneDisabled),
	}), opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "applied", res.Applied, "ConfigMap/a")
	wantNames(t, "unchanged", res.Unchanged, "ConfigMap/b", "ConfigMap/c", "ConfigMap/d")
	if live, err := getCM(t, ns, "a"); err != nil || live.Data["key"] != "v2" {
		t.Errorf("a = %v, %v; want data updated to v2", live.Data, err)
	}

	// Someone takes c over by removing our labels.
	c, err := getCM(t, ns, "c")
	if err != nil {
		t.Fatal(err)
	}
	delete(c.Labels, v1alpha1.LabelName)
	if _, err := env.Kube.CoreV1().ConfigMaps(ns).Update(ctx(t), c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Commit 3: only a remains, e is new.
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
	res, err = a.Apply(ctx(t), load(t, map[string]string{
		"a.yaml": configMap("a", "v2"),
		"e.yaml": configMap("e", "v1"),
	}), opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "applied", res.Applied, "ConfigMap/e")
	wantNames(t, "pruned", res.Pruned, "ConfigMap/b")
	wantNames(t, "inventory", res.Inventory, "ConfigMap/a", "ConfigMap/e")
	if _, err := getCM(t, ns, "b"); !apierrors.IsNotFound(err) {
		t.Errorf("b: %v, want it pruned", err)
	}
	for _, kept := range []string{"c", "d"} {
		if _, err := getCM(t, ns, kept); err != nil {
			t.Errorf("%s: %v, want it kept", kept, err)
		}
	}
}

func TestPruneIsHeldBack(t *testing.T) {
	tests := []struct {
		name          string
		prune, skip   bool
		wantInventory []string
	}{
		{"prune disabled: the object is left and forgotten", false, false, []string{"ConfigMap/keep"}},
		{"manifests failed to parse: nothing is pruned or forgotten", true, true, []string{"ConfigMap/gone", "ConfigMap/keep"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t)
			a := newApplier(t)
			opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
			res, err := a.Apply(ctx(t), load(t, map[string]string{"keep.yaml": configMap("keep", "1"), "gone.yaml": configMap("gone", "1")}), opts)
			if err != nil || len(res.Failed) > 0 {
				t.Fatalf("first apply: %v %v", err, res.Failed)
			}
			opts.Inventory, opts.Prune, opts.SkipPrune = res.Inventory, tt.prune, tt.skip
			res, err = a.Apply(ctx(t), load(t, map[string]string{"keep.yaml": configMap("keep", "1")}), opts)
			if err != nil {
				t.Fatal(err)
			}
			wantNames(t, "pruned", res.Pruned)
			wantNames(t, "inventory", res.Inventory, tt.wantInventory...)
			if _, err := getCM(t, ns, "gone"); err != nil {
				t.Errorf("gone: %v, want it left in the cluster", err)
			}
		})
	}
}

func TestCRDAndCustomResourceInOneSync(t *testing.T) {
	ns := env.Namespace(t)
	group := ns + ".example.com"
	crd := fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.%s
spec:
  group: %s
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
`, group, group)
	// The custom resource and the ConfigMap in a new Namespace sort first
	// by file name: the apply order must not depend on it.
	objs := load(t, map[string]string{
		"a-widget.yaml": fmt.Sprintf("apiVersion: %s/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n", group),
		"a-cm.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: " + ns + "-new}\n",
		"z-crd.yaml":    crd,
		"z-ns.yaml":     "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "-new}\n",
		"role.yaml":     "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: " + ns + "-reader, namespace: ignored}\nrules: []\n",
	})
	a := newApplier(t)
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}

	// A dry run cannot check the Widget before its CRD exists, but knows
	// it will be created; a kind nobody defines is an error.
	unknown := load(t, map[string]string{"g.yaml": "apiVersion: nowhere.example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"})
	diffs, err := a.DryRun(ctx(t), append(objs, unknown...), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		if wantErr := d.Ref.Kind == "Gadget"; d.Action != "create" || (d.Err != nil) != wantErr {
			t.Errorf("dry run %s: action %q, error %v; want create, error only for the unknown kind", d.Ref.Kind, d.Action, d.Err)
		}
	}

	res, err := a.Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	wantNames(t, "applied", res.Applied, "CustomResourceDefinition/widgets."+group, "Widget/w",
		"ClusterRole/"+ns+"-reader", "Namespace/"+ns+"-new", "ConfigMap/c")
	for _, ref := range res.Inventory {
		wantNS := map[string]string{"Widget": ns, "ConfigMap": ns + "-new"}[ref.Kind] // cluster-scoped: none
		if ref.Namespace != wantNS {
			t.Errorf("%s/%s in namespace %q, want %q", ref.Kind, ref.Name, ref.Namespace, wantNS)
		}
	}
	w, err := env.Dynamic.Resource(schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}).
		Namespace(ns).Get(ctx(t), "w", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if size, _, _ := unstructured.NestedInt64(w.Object, "spec", "size"); size != 3 {
		t.Errorf("widget size %d, want 3", size)
	}
}

func TestOneInvalidObjectAmongTen(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	files := map[string]string{}
	for i := range 9 {
		files[fmt.Sprintf("cm%d.yaml", i)] = configMap(fmt.Sprintf("cm%d", i), "ok")
	}
	files["bad.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {\"not a valid key!\": x}\n"
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), load(t, files), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) != 9 || len(res.Inventory) != 9 {
		t.Errorf("applied %v, inventory %v; want the nine good objects", names(res.Applied), names(res.Inventory))
	}
	if len(res.Failed) != 1 || res.Failed[0].Ref.Name != "bad" {
		t.Fatalf("failed = %v, want only bad", res.Failed)
	}
	msg := res.Failed[0].Error()
	if !strings.Contains(msg, "ConfigMap "+ns+"/bad") || !strings.Contains(msg, "a valid config key must consist of") {
		t.Errorf("failure %q, want it to name the object and carry the server's message", msg)
	}

	// Next commit breaks cm0, which was applied before: it stays in the
	// inventory and in the cluster, and is sent again next time.
	files["cm0.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm0}\ndata: {\"still bad!\": x}\n"
	opts.Inventory, opts.Hashes = res.Inventory, res.Hashes
	res, err = a.Apply(ctx(t), load(t, files), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(res.Inventory, func(r v1alpha1.ObjectRef) bool { return r.Name == "cm0" }) {
		t.Errorf("inventory %v lost cm0, which failed to apply", names(res.Inventory))
	}
	if _, ok := res.Hashes[k8s.ObjectKey(v1alpha1.ObjectRef{Kind: "ConfigMap", Namespace: ns, Name: "cm0"})]; ok {
		t.Error("a failed object kept its content hash; it would not be retried")
	}
	if len(res.Pruned) != 0 {
		t.Errorf("pruned %v, want nothing", names(res.Pruned))
	}
	if _, err := getCM(t, ns, "cm0"); err != nil {
		t.Errorf("cm0: %v, want it still in the cluster", err)
	}
}

func TestImmutableFieldChange(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	immutable := func(v string) []*unstructured.Unstructured {
		return load(t, map[string]string{"cm.yaml": configMap("frozen", v) + "immutable: true\n"})
	}
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), immutable("v1"), opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("first apply: %v %v", err, res.Failed)
	}
	before, err := getCM(t, ns, "frozen")
	if err != nil {
		t.Fatal(err)
	}

	opts.Inventory = res.Inventory
	res, err = a.Apply(ctx(t), immutable("v2"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Error(), "immutable") || !strings.Contains(res.Failed[0].Error(), "spec.force") {
		t.Fatalf("failed = %v, want one error about the immutable field that mentions spec.force", res.Failed)
	}

	opts.Force = true
	res, err = a.Apply(ctx(t), immutable("v2"), opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	after, err := getCM(t, ns, "frozen")
	if err != nil {
		t.Fatal(err)
	}
	if after.Data["key"] != "v2" || after.UID == before.UID {
		t.Errorf("after force: data %v uid changed %v; want v2 in a recreated object", after.Data, after.UID != before.UID)
	}
}

func TestUnreachableAPIServerFailsTheWholeSync(t *testing.T) {
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://127.0.0.1:1" // nothing listens on port 1
	a, err := k8s.NewApplier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	prev := []v1alpha1.ObjectRef{{Kind: "ConfigMap", Namespace: "x", Name: "old"}}
	res, err := a.Apply(ctx(t), load(t, map[string]string{"a.yaml": configMap("a", "1")}),
		k8s.Options{Owner: k8s.Owner{Namespace: "x", Name: "r"}, Prune: true, Inventory: prev})
	if err == nil {
		t.Fatalf("Apply = %+v, want an error for the whole sync", res)
	}
	if len(res.Failed) != 0 {
		t.Errorf("failed = %v, want the error returned, not per object", res.Failed)
	}
	wantNames(t, "inventory", res.Inventory, "ConfigMap/old")
}

func TestCancelledSyncKeepsTheInventory(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
	res, err := a.Apply(ctx(t), load(t, map[string]string{"old.yaml": configMap("old", "1")}), opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("first apply: %v %v", err, res.Failed)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	opts.Inventory = res.Inventory
	res, err = a.Apply(cancelled, load(t, map[string]string{"new.yaml": configMap("new", "1")}), opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a cancelled context: %v, want context.Canceled", err)
	}
	wantNames(t, "inventory", res.Inventory, "ConfigMap/old")
	if _, err := getCM(t, ns, "old"); err != nil {
		t.Errorf("old: %v, want it not pruned", err)
	}
}

func TestConcurrentRepositoriesShareOneApplier(t *testing.T) {
	a := newApplier(t)
	const repos = 8
	namespaces := make([]string, repos)
	for i := range namespaces {
		namespaces[i] = env.Namespace(t)
	}
	errs := make(chan error, repos)
	for i, ns := range namespaces {
		go func() {
			objs := load(t, map[string]string{"a.yaml": configMap("a", fmt.Sprint(i)), "b.yaml": configMap("b", "x")})
			res, err := a.Apply(ctx(t), objs, k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true})
			if err == nil && (len(res.Failed) > 0 || len(res.Applied) != 2) {
				err = fmt.Errorf("%s: applied %v failed %v", ns, names(res.Applied), res.Failed)
			}
			errs <- err
		}()
	}
	for range repos {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i, ns := range namespaces {
		if cm, err := getCM(t, ns, "a"); err != nil || cm.Data["key"] != fmt.Sprint(i) {
			t.Errorf("%s/a = %v, %v; want its own data %d", ns, cm, err, i)
		}
	}
}
