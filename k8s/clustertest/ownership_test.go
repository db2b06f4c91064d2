package clustertest

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// createGitRepository makes the owner exist, as it does in a cluster.
func createGitRepository(t *testing.T, ns, name string) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "GitRepository",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"url": "https://git.example/" + name + ".git"},
	}}
	if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestTwoRepositoriesCannotShareAnObject: the second GitRepository that
// declares an object another one manages gets a clear failure and takes
// nothing over, so neither's prune can delete what the other declares.
func TestTwoRepositoriesCannotShareAnObject(t *testing.T) {
	ns := env.Namespace(t)
	createGitRepository(t, ns, "a")
	a := newApplier(t)
	objs := load(t, map[string]string{"shared.yaml": configMap("shared", "from-a")})
	optsA := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "a"}, TargetNamespace: ns, Prune: true}
	resA, err := a.Apply(ctx(t), objs, optsA)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, resA.Failed)

	optsB := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "b"}, TargetNamespace: ns, Prune: true}
	resB, err := a.Apply(ctx(t), load(t, map[string]string{"shared.yaml": configMap("shared", "from-b")}), optsB)
	if err != nil {
		t.Fatal(err)
	}
	if len(resB.Failed) != 1 || !strings.Contains(resB.Failed[0].Error(), "already managed by GitRepository "+ns+"/a") {
		t.Fatalf("second owner: failures %v, want one naming GitRepository %s/a", resB.Failed, ns)
	}
	if len(resB.Inventory) != 0 {
		t.Fatalf("second owner's inventory = %v, want empty", resB.Inventory)
	}
	cm, err := getCM(t, ns, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["key"] != "from-a" || cm.Labels["alumiini.false.systems/name"] != "a" {
		t.Fatalf("the object changed hands: data %v labels %v", cm.Data, cm.Labels)
	}

	// The first owner re-applying it is not a conflict.
	optsA.Inventory, optsA.Hashes = resA.Inventory, nil
	again, err := a.Apply(ctx(t), objs, optsA)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, again.Failed)
}

// TestObjectsOfADeletedRepositoryCanBeTakenOver: deleting a GitRepository
// prunes nothing, and its objects may then be declared by another one.
func TestObjectsOfADeletedRepositoryCanBeTakenOver(t *testing.T) {
	ns := env.Namespace(t)
	a := newApplier(t)
	gone := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "no-such-repository"}, TargetNamespace: ns}
	if res, err := a.Apply(ctx(t), load(t, map[string]string{"cm.yaml": configMap("cm", "old")}), gone); err != nil || len(res.Failed) > 0 {
		t.Fatalf("first apply: %v %v", err, res.Failed)
	}
	heir := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "heir"}, TargetNamespace: ns}
	res, err := a.Apply(ctx(t), load(t, map[string]string{"cm.yaml": configMap("cm", "new")}), heir)
	if err != nil {
		t.Fatal(err)
	}
	wantNoFailures(t, res.Failed)
	if cm, err := getCM(t, ns, "cm"); err != nil || cm.Labels["alumiini.false.systems/name"] != "heir" {
		t.Fatalf("object not taken over: %v %v", cm, err)
	}
}
