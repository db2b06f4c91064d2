package clustertest

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// TestServiceAccountConfinesEveryStep: with a ServiceAccount allowed only
// in its own namespace, apply, dry run, drift and prune of an object in
// another namespace are refused as that ServiceAccount, naming the object
// and the permission, while the permitted object is applied; a default
// ServiceAccount does the same for options naming none; without either,
// the controller's own rights apply.
func TestServiceAccountConfinesEveryStep(t *testing.T) {
	own, other := env.Namespace(t), env.Namespace(t)
	env.ServiceAccountWithRole(t, own, "deployer", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"},
		Verbs: []string{"patch", "get", "list", "create", "update", "delete"}})
	objs := load(t, map[string]string{
		"mine.yaml":   configMap("mine", "1"),
		"theirs.yaml": strings.Replace(configMap("theirs", "1"), "  name: theirs\n", "  name: theirs\n  namespace: "+other+"\n", 1),
	})
	user := "system:serviceaccount:" + own + ":deployer"
	theirs := v1alpha1.ObjectRef{Version: "v1", Kind: "ConfigMap", Namespace: other, Name: "theirs"}
	opts := k8s.Options{Owner: k8s.Owner{Namespace: own, Name: "a"}, Prune: true, ServiceAccount: "deployer"}
	wantRefused := func(what string, errs []k8s.ObjectError) {
		t.Helper()
		if len(errs) != 1 || errs[0].Ref != theirs {
			t.Fatalf("%s: failures %v, want only %s/theirs", what, errs, other)
		}
		msg := errs[0].Error()
		for _, want := range []string{"ConfigMap " + other + "/theirs", user, `resource "configmaps"`, `namespace "` + other + `"`} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q does not say %q", what, msg, want)
			}
		}
	}

	res, err := newApplier(t).Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNames(t, "applied", res.Applied, "ConfigMap/mine")
	wantRefused("apply", res.Failed)

	diffs, err := newApplier(t).DryRun(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	var dryErrs []k8s.ObjectError
	for _, d := range diffs {
		if d.Err != nil {
			dryErrs = append(dryErrs, k8s.ObjectError{Ref: d.Ref, Err: d.Err})
		}
	}
	wantRefused("dry run", dryErrs)

	// theirs exists, labelled as if this repository owned it: still the
	// ServiceAccount may neither check it for drift nor prune it.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: other,
		Labels: map[string]string{v1alpha1.LabelName: "a", v1alpha1.LabelNamespace: own}}}
	if _, err := env.Kube.CoreV1().ConfigMaps(other).Create(ctx(t), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	opts.Inventory = append(res.Inventory, theirs)
	drift, err := newApplier(t).Drift(ctx(t), objs, opts, v1alpha1.DriftCorrect)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused("drift", drift.Failed)

	pruned, err := newApplier(t).Apply(ctx(t), objs[:0:0], opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNames(t, "pruned", pruned.Pruned, "ConfigMap/mine")
	wantRefused("prune", pruned.Failed)
	if _, err := getCM(t, other, "theirs"); err != nil {
		t.Fatalf("the ServiceAccount pruned an object it may not touch: %v", err)
	}
	if !slices.Contains(pruned.Inventory, theirs) {
		t.Errorf("a refused prune left the inventory: %v", pruned.Inventory)
	}

	lockdown, err := k8s.NewApplier(env.Config, k8s.WithDefaultServiceAccount("deployer"))
	if err != nil {
		t.Fatal(err)
	}
	opts.ServiceAccount, opts.Inventory = "", nil
	res, err = lockdown.Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused("apply with the default ServiceAccount", res.Failed)

	res, err = newApplier(t).Apply(ctx(t), objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
}
