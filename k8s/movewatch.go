package k8s

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// MoveWatch tells a drift check, without a request, that none of a
// repository's objects can have moved since the check before it.
//
// It keeps one metadata-only watch per resource of the applied objects,
// across all namespaces, selecting the objects ALUMIINI labels, and counts
// the events per repository (from the labels). It stores no object: memory
// is a counter per repository. A check that listed the objects and found
// them at their recorded resourceVersions settles a mark taken before its
// list; the next check is quiet when the repository's counter has not moved
// since and every watch it relies on ran without a gap meanwhile. Anything
// else (a watch not established, forbidden, restarted after a gap, an
// event, our own applies included) sends the check back to its list.
//
// Why this is safe: a change the list did not see happened after the
// list's read, so its event reaches the watch after the mark was taken. A
// watch that resumes from its last resourceVersion loses no event; one that
// cannot (410 Gone, an error) starts a new epoch, which invalidates every
// mark. An event delayed in flight delays the finding by one check.
type MoveWatch struct {
	ctx    context.Context
	client metadata.Interface // the controller's own identity
	log    *zap.Logger

	mu      sync.Mutex
	epoch   uint64 // bumped whenever a watch (re)starts without continuity
	watches map[schema.GroupVersionResource]*resourceWatch
	repos   map[string]*repoMoves
}

// Mark is a point in a repository's event count.
type Mark struct{ epoch, count uint64 }

type resourceWatch struct{ established bool }

type repoMoves struct {
	count   uint64 // events seen for the repository's objects
	settled Mark   // the count at which its objects were last found in place
	ok      bool   // settled is set
}

// newMoveWatch returns a MoveWatch whose watches run until ctx is done.
func newMoveWatch(ctx context.Context, client metadata.Interface, log *zap.Logger) *MoveWatch {
	if log == nil {
		log = zap.NewNop()
	}
	return &MoveWatch{ctx: ctx, client: client, log: log,
		watches: map[schema.GroupVersionResource]*resourceWatch{}, repos: map[string]*repoMoves{}}
}

// Mark returns the repository's count now: take it before the list whose
// finding Settle records.
func (w *MoveWatch) Mark(key string) Mark {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Mark{w.epoch, w.repo(key).count}
}

// Settle records that key's objects were all in place at the list that
// followed mark.
func (w *MoveWatch) Settle(key string, mark Mark) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.repo(key)
	r.settled, r.ok = mark, true
}

// Quiet reports that none of key's objects, of the resources given, can
// have moved since they were last settled. It starts the watches of
// resources not yet watched, so the first check of a kind always lists.
func (w *MoveWatch) Quiet(key string, resources []schema.GroupVersionResource) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	quiet := true
	for _, gvr := range resources {
		rw, ok := w.watches[gvr]
		if !ok {
			rw = &resourceWatch{}
			w.watches[gvr] = rw
			go w.run(gvr)
		}
		quiet = quiet && rw.established
	}
	r := w.repos[key]
	return quiet && r != nil && r.ok && r.settled == Mark{w.epoch, r.count}
}

// Forget drops a removed repository's count.
func (w *MoveWatch) Forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.repos, key)
}

func (w *MoveWatch) repo(key string) *repoMoves {
	r, ok := w.repos[key]
	if !ok {
		r = &repoMoves{}
		w.repos[key] = r
	}
	return r
}

// run keeps gvr watched until the MoveWatch's context ends: it starts at
// the current resourceVersion (no initial events), resumes from the last
// one it saw when the API server closes the watch, and starts over, in a
// new epoch, when it cannot resume.
func (w *MoveWatch) run(gvr schema.GroupVersionResource) {
	delay := time.Second
	for w.ctx.Err() == nil {
		rv, err := w.start(gvr)
		if err == nil {
			delay = time.Second
			err = w.follow(gvr, rv)
		}
		w.setEstablished(gvr, false)
		if w.ctx.Err() != nil {
			return
		}
		w.log.Info("drift checks of this resource list instead of watching until its watch is back",
			zap.String("resource", gvr.String()), zap.Error(err), zap.Duration("retry_in", delay))
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(delay + rand.N(delay/2)):
		}
		delay = min(2*delay, 5*time.Minute)
	}
}

// start reads the resource's current resourceVersion with a one-item list
// and opens a new epoch.
func (w *MoveWatch) start(gvr schema.GroupVersionResource) (string, error) {
	list, err := w.client.Resource(gvr).List(w.ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelName, Limit: 1})
	if err != nil {
		return "", fmt.Errorf("list %s: %w", gvr, err)
	}
	w.mu.Lock()
	w.epoch++
	w.mu.Unlock()
	w.setEstablished(gvr, true)
	return list.ResourceVersion, nil
}

// follow watches from rv, resuming after each close, and returns when it
// cannot resume without a gap.
func (w *MoveWatch) follow(gvr schema.GroupVersionResource, rv string) error {
	for {
		wi, err := w.client.Resource(gvr).Watch(w.ctx, metav1.ListOptions{
			LabelSelector: v1alpha1.LabelName, ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			return fmt.Errorf("watch %s from %s: %w", gvr, rv, err)
		}
		if rv, err = w.drain(wi, rv); err != nil {
			return fmt.Errorf("watch %s: %w", gvr, err)
		}
	}
}

// drain counts the events of one watch until the server closes it, and
// returns the resourceVersion to resume from. An error event (410 Gone
// when rv was compacted away, or any other) ends the continuity.
func (w *MoveWatch) drain(wi watch.Interface, rv string) (string, error) {
	defer wi.Stop()
	for ev := range wi.ResultChan() {
		if ev.Type == watch.Error {
			return "", apierrors.FromObject(ev.Object)
		}
		obj, ok := ev.Object.(*metav1.PartialObjectMetadata)
		if !ok {
			continue
		}
		rv = obj.ResourceVersion
		if ev.Type == watch.Bookmark {
			continue
		}
		w.count(obj.GetLabels())
	}
	return rv, nil
}

// count adds an event to the repository that labels name. A repository
// without an entry has no mark to invalidate (Mark creates it): its events
// are not kept, so removed repositories leave nothing behind.
func (w *MoveWatch) count(labels map[string]string) {
	key := labels[v1alpha1.LabelNamespace] + "/" + labels[v1alpha1.LabelName]
	w.mu.Lock()
	defer w.mu.Unlock()
	if r, ok := w.repos[key]; ok {
		r.count++
	}
}

func (w *MoveWatch) setEstablished(gvr schema.GroupVersionResource, v bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watches[gvr].established = v
}
