package main

import (
	"sync"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// repoIndex lists the GitRepositories the informer holds (typed, by
// slimRepository, once per change), so that the webhook handler can match a
// push against 10,000 repositories without converting any of them per
// request.
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
	repo, ok := obj.(*v1alpha1.GitRepository) // slimRepository's
	if !ok {
		name, _ := cache.MetaNamespaceKeyFunc(obj)
		x.log.Warn("skip a GitRepository that does not convert, for webhook matching", zap.String("repository", name))
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

// slimRepository turns the informer's copy of a GitRepository into the
// typed object, without what no reader of that copy needs, to keep the
// memory of idle repositories low: managedFields, and the inventory (a sync
// reads the status, inventory included, from the API server before it
// applies, prunes or checks drift). The typed object is a fraction of the
// size of its unstructured maps, and the webhook index and the repository
// actors share it: objects in an informer's cache are never modified. One
// that does not convert stays unstructured, for the watcher to report.
func slimRepository(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	repo := &v1alpha1.GitRepository{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, repo); err != nil {
		u.SetManagedFields(nil)
		return u, nil
	}
	repo.ManagedFields = nil
	repo.Status.Inventory = nil
	return repo, nil
}
