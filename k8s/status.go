package k8s

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// StatusWriter writes GitRepository status through the status subresource.
type StatusWriter struct{ client dynamic.Interface }

// NewStatusWriter returns a StatusWriter using client.
func NewStatusWriter(client dynamic.Interface) *StatusWriter { return &StatusWriter{client: client} }

// Write server-side applies status as the whole status of repo, under our
// field manager, unless it equals what repo already has: an unchanged sync
// makes no API request. It returns whether it wrote, and changes neither
// argument: the caller keeps the status it wrote.
func (w *StatusWriter) Write(ctx context.Context, repo *v1alpha1.GitRepository, status v1alpha1.GitRepositoryStatus) (bool, error) {
	if equality.Semantic.DeepEqual(repo.Status, status) {
		return false, nil
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	if err != nil {
		return false, fmt.Errorf("encode status of %s: %w", repo.Key(), err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "GitRepository",
		"metadata":   map[string]any{"name": repo.Name, "namespace": repo.Namespace},
		"status":     content,
	}}
	_, err = w.client.Resource(v1alpha1.GitRepositoryResource).Namespace(repo.Namespace).Apply(ctx, repo.Name, obj,
		metav1.ApplyOptions{FieldManager: v1alpha1.FieldManager, Force: true}, "status")
	if err != nil {
		return false, fmt.Errorf("write status of GitRepository %s: %w", repo.Key(), err)
	}
	return true, nil
}

// Get reads the current GitRepository from the API server.
func (w *StatusWriter) Get(ctx context.Context, namespace, name string) (*v1alpha1.GitRepository, error) {
	u, err := w.client.Resource(v1alpha1.GitRepositoryResource).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get GitRepository %s/%s: %w", namespace, name, err)
	}
	var repo v1alpha1.GitRepository
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &repo); err != nil {
		return nil, fmt.Errorf("decode GitRepository %s/%s: %w", namespace, name, err)
	}
	return &repo, nil
}
