package clustertest

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

func TestStatusWriterWritesOnlyChanges(t *testing.T) {
	ns := env.Namespace(t)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "GitRepository",
		"metadata": map[string]any{"name": "apps", "namespace": ns},
		"spec":     map[string]any{"url": "https://h/r.git"},
	}}
	if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := k8s.NewStatusWriter(env.Dynamic)
	repo, err := w.Get(ctx(t), ns, "apps")
	if err != nil {
		t.Fatal(err)
	}
	st := v1alpha1.GitRepositoryStatus{Phase: v1alpha1.PhaseSynced, LastSyncedCommit: "abc1234",
		Inventory: []v1alpha1.ObjectRef{{Kind: "ConfigMap", Namespace: ns, Name: "a"}}}
	wrote, err := w.Write(ctx(t), repo, st)
	if err != nil || !wrote {
		t.Fatalf("first write: wrote %v, err %v", wrote, err)
	}
	if repo.Status.Phase != "" {
		t.Fatalf("Write changed its argument: status %+v", repo.Status)
	}
	got, err := w.Get(ctx(t), ns, "apps")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != v1alpha1.PhaseSynced || len(got.Status.Inventory) != 1 || got.Spec.URL != "https://h/r.git" {
		t.Fatalf("status not written through the subresource, or spec touched: %+v", got)
	}
	rv := got.ResourceVersion
	wrote, err = w.Write(ctx(t), got, st)
	if err != nil || wrote {
		t.Fatalf("unchanged write: wrote %v, err %v", wrote, err)
	}
	again, _ := w.Get(ctx(t), ns, "apps")
	if again.ResourceVersion != rv {
		t.Fatalf("an unchanged status changed the resourceVersion %s → %s", rv, again.ResourceVersion)
	}
}

func TestSecretsCachesAndForgets(t *testing.T) {
	ns := env.Namespace(t)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns}, Data: map[string][]byte{"token": []byte("one")}}
	if _, err := env.Kube.CoreV1().Secrets(ns).Create(ctx(t), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := k8s.NewSecrets(env.Kube, time.Hour)
	if v, err := s.SecretValue(ctx(t), ns, "git", "token"); err != nil || string(v) != "one" {
		t.Fatalf("SecretValue = %q, %v", v, err)
	}
	sec.Data["token"] = []byte("two")
	if _, err := env.Kube.CoreV1().Secrets(ns).Update(ctx(t), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.SecretValue(ctx(t), ns, "git", "token"); string(v) != "one" {
		t.Fatalf("within the TTL the cached value should be served, got %q", v)
	}
	s.Forget(ns, "git")
	if v, _ := s.SecretValue(ctx(t), ns, "git", "token"); string(v) != "two" {
		t.Fatalf("after Forget the Secret should be read again, got %q", v)
	}
	if _, err := s.SecretValue(ctx(t), ns, "git", "missing"); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("missing key: err = %v, want one naming the key", err)
	}
	if _, err := s.SecretValue(ctx(t), ns, "nope", "token"); err == nil || !strings.Contains(err.Error(), ns+"/nope") {
		t.Fatalf("missing Secret: err = %v, want one naming it", err)
	}
}
