package clustertest

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

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

// countingApplier is an Applier whose requests are counted by method ("":
// any) and path, to show what a run sends.
func countingApplier(t testing.TB, options ...k8s.ApplierOption) (*k8s.Applier, func(method, pathPart string) int) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			seen = append(seen, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
			mu.Unlock()
			return rt.RoundTrip(req)
		})
	})
	a, err := k8s.NewApplier(cfg, options...)
	if err != nil {
		t.Fatal(err)
	}
	count := func(method, pathPart string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range seen {
			if (method == "" || strings.HasPrefix(s, method+" ")) && strings.Contains(s, pathPart) {
				n++
			}
		}
		return n
	}
	return a, count
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestClaimsOfManyNewObjectsAreListed: a run that brings many new objects
// reads the claims of each namespace as lists, not object by object, and
// still refuses what another existing GitRepository manages (one of the
// same name in another namespace included), takes over what a deleted
// one left, and keeps what it manages already.
func TestClaimsOfManyNewObjectsAreListed(t *testing.T) {
	ns, other := env.Namespace(t), env.Namespace(t)
	createGitRepository(t, ns, "a")
	createGitRepository(t, other, "b")
	createGitRepository(t, ns, "b") // the repository applying below
	plain := newApplier(t)
	for _, set := range []struct {
		owner k8s.Owner
		name  string
	}{
		{k8s.Owner{Namespace: ns, Name: "a"}, "shared"},
		{k8s.Owner{Namespace: other, Name: "b"}, "twin"},
		{k8s.Owner{Namespace: ns, Name: "gone"}, "orphan"},
		{k8s.Owner{Namespace: ns, Name: "b"}, "mine"}, // the list holds it too: not a claim
	} {
		res, err := plain.Apply(ctx(t), load(t, map[string]string{"cm.yaml": configMap(set.name, set.owner.Name)}), k8s.Options{Owner: set.owner, TargetNamespace: ns})
		if err != nil || len(res.Failed) > 0 {
			t.Fatalf("set up %s: %v %v", set.name, err, res.Failed)
		}
	}

	// A name label left empty claims nothing, as for a single read.
	blank := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "blank", Namespace: ns, Labels: map[string]string{v1alpha1.LabelName: ""}}}
	if _, err := env.Kube.CoreV1().ConfigMaps(ns).Create(ctx(t), blank, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	files := map[string]string{}
	for _, name := range []string{"shared", "twin", "orphan", "mine", "blank", "fresh-1", "fresh-2", "fresh-3"} {
		files[name+".yaml"] = configMap(name, "b")
	}
	a, count := countingApplier(t)
	res, err := a.Apply(ctx(t), load(t, files), k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "b"}, TargetNamespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]string{}
	for _, f := range res.Failed {
		failed[f.Ref.Name] = f.Error()
	}
	if len(failed) != 2 || !strings.Contains(failed["shared"], "GitRepository "+ns+"/a") || !strings.Contains(failed["twin"], "GitRepository "+other+"/b") {
		t.Fatalf("failures %v, want shared (managed by %s/a) and twin (managed by %s/b)", failed, ns, other)
	}
	if cm, err := getCM(t, ns, "orphan"); err != nil || cm.Data["key"] != "b" {
		t.Fatalf("orphan of a deleted repository not taken over: %v %v", cm, err)
	}
	if gets, lists := count("GET", "/namespaces/"+ns+"/configmaps/"), count("GET", "/namespaces/"+ns+"/configmaps?"); gets != 0 || lists != 1 {
		t.Fatalf("%d reads of single ConfigMaps and %d lists; want no single reads and 1 list", gets, lists)
	}
}
