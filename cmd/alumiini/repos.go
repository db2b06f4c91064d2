package main

import (
	"sync"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// repoIndex keeps typed copies of the GitRepositories the informer holds,
// converted once per change, so that the webhook handler can match a push
// against 10,000 repositories without converting any of them per request.
type repoIndex struct {
	log *zap.Logger

	mu    sync.Mutex
	repos map[string]*v1alpha1.GitRepository
	list  []*v1alpha1.GitRepository // snapshot; nil when it must be rebuilt
}

func newRepoIndex(log *zap.Logger) *repoIndex {
	return &repoIndex{log: log, repos: map[string]*v1alpha1.GitRepository{}}
}

// handler returns the informer event handler that maintains the index.
func (x *repoIndex) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    x.set,
		UpdateFunc: func(_, obj any) { x.set(obj) },
		DeleteFunc: func(obj any) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err != nil {
				return
			}
			x.mu.Lock()
			delete(x.repos, key)
			x.list = nil
			x.mu.Unlock()
		},
	}
}

func (x *repoIndex) set(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	repo := &v1alpha1.GitRepository{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, repo); err != nil {
		x.log.Warn("skip GitRepository for webhook matching", zap.String("repository", u.GetNamespace()+"/"+u.GetName()), zap.Error(err))
		return
	}
	x.mu.Lock()
	x.repos[repo.Key()] = repo
	x.list = nil
	x.mu.Unlock()
}

// List returns the repositories; callers must not modify them.
func (x *repoIndex) List() []*v1alpha1.GitRepository {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.list == nil {
		x.list = make([]*v1alpha1.GitRepository, 0, len(x.repos))
		for _, r := range x.repos {
			x.list = append(x.list, r)
		}
	}
	return x.list
}

// slimRepository drops from the informer's copy of a GitRepository what no
// reader of that copy needs, to keep the memory of idle repositories low:
// managedFields, and the inventory (a sync reads the status, inventory
// included, from the API server before it applies, prunes or checks drift).
func slimRepository(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
		unstructured.RemoveNestedField(u.Object, "status", "inventory")
	}
	return obj, nil
}
