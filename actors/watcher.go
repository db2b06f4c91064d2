package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// watchEvent is an informer notification, handed to the watcher actor so
// that conversion and routing happen off the informer's goroutine.
type watchEvent struct {
	obj     any
	deleted bool
}

// watcher turns GitRepository events into supervisor messages. Informer
// resyncs and relists replay objects the supervisor already has: those
// become updates, never second actors.
type watcher struct{ sys *System }

func (w *watcher) Receive(ctx actor.Context) {
	ev, ok := ctx.Message().(*watchEvent)
	if !ok {
		return
	}
	if ev.deleted {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(ev.obj)
		if err != nil {
			w.sys.log.Error("GitRepository deletion without a key", zap.Error(err))
			return
		}
		ctx.Send(w.sys.supervisor, &remove{key: key})
		return
	}
	repo, err := toRepository(ev.obj)
	if err != nil {
		w.sys.log.Error("skip GitRepository event", zap.Error(err))
		return
	}
	if owns := w.sys.cfg.Owns; owns != nil && !owns(repo.Key()) {
		ctx.Send(w.sys.supervisor, &remove{key: repo.Key()})
		return
	}
	ctx.Send(w.sys.supervisor, &upsert{repo: repo})
}

// Reconsider replays every GitRepository of the watched informer through
// the watcher, so that Config.Owns is asked again: repositories this
// System now owns start, those it no longer owns stop.
func (s *System) Reconsider() {
	s.mu.Lock()
	w := s.watch
	s.mu.Unlock()
	if w == nil {
		return
	}
	for _, obj := range w.informer.GetStore().List() {
		s.root.Send(w.pid, &watchEvent{obj: obj})
	}
}

// toRepository returns the informer's GitRepository: typed already when
// the informer's transform made it so (shared, never to be modified), or
// converted from its unstructured form.
func toRepository(obj any) (*v1alpha1.GitRepository, error) {
	if repo, ok := obj.(*v1alpha1.GitRepository); ok {
		return repo, nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("informer delivered %T, want a GitRepository", obj)
	}
	repo := &v1alpha1.GitRepository{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, repo); err != nil {
		return nil, fmt.Errorf("convert GitRepository %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return repo, nil
}

// watch is the watcher actor and its handler on an informer that the
// caller owns and runs.
type watch struct {
	informer cache.SharedIndexInformer
	reg      cache.ResourceEventHandlerRegistration
	pid      *actor.PID
}

func (w *watch) stop(root *actor.RootContext) {
	_ = w.informer.RemoveEventHandler(w.reg)
	_ = root.StopFuture(w.pid).Wait()
}

// WatchInformer starts the watcher actor on an informer of GitRepositories
// that the caller owns and runs, such as one shared across leadership
// terms, and returns once every existing repository has been handed to the
// supervisor or ctx is done. Shutdown only removes this System's handler.
func (s *System) WatchInformer(ctx context.Context, informer cache.SharedIndexInformer) error {
	w := &watch{informer: informer}
	if err := s.startWatch(w); err != nil {
		return err
	}
	return waitSynced(ctx, w)
}

func (s *System) startWatch(w *watch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.watch != nil {
		return errors.New("watch GitRepositories: this System already watches, or is shut down")
	}
	pid, err := s.root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &watcher{sys: s} }), "watcher")
	if err != nil {
		return fmt.Errorf("watch GitRepositories: spawn the watcher: %w", err)
	}
	send := func(obj any, deleted bool) { s.root.Send(pid, &watchEvent{obj: obj, deleted: deleted}) }
	reg, err := w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { send(obj, false) },
		UpdateFunc: func(_, obj any) { send(obj, false) },
		DeleteFunc: func(obj any) { send(obj, true) },
	})
	if err != nil {
		s.root.Stop(pid)
		return fmt.Errorf("watch GitRepositories: add event handler: %w", err)
	}
	w.pid, w.reg = pid, reg
	s.watch = w
	return nil
}

// waitSynced waits until the informer has listed and the handler has seen
// every object of that list.
func waitSynced(ctx context.Context, w *watch) error {
	if !cache.WaitForCacheSync(ctx.Done(), w.reg.HasSynced) {
		return fmt.Errorf("watch GitRepositories: wait for the informer to sync: %w", ctx.Err())
	}
	return nil
}
