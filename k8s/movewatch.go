package k8s

import (
	"context"
	"fmt"
	"hash/fnv"
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
// the events per object identity (resource, namespace, name) in a fixed
// table of buckets: it stores no object, and its memory does not grow with
// the cluster. Counting by identity, not by label, also catches an object
// whose owner labels another writer edited. A check that listed its
// objects and found them at their recorded resourceVersions settles a mark
// taken before its list (the sum of its objects' buckets); the next check
// is quiet when that sum has not moved and every watch it relies on has
// run without a restart since the mark. Anything else (a watch not
// established, forbidden, restarted after a gap, an event, our own applies
// and a bucket another object shares included) sends the check back to its
// list.
//
// Why this is safe: a change the list did not see happened after the
// list's read, so its event reaches the watch after the mark was taken. A
// watch that resumes from its last resourceVersion loses no event; one that
// cannot (410 Gone, an error, an unexpected event) restarts in a new epoch,
// which invalidates the marks taken before. An event still in flight when
// a check runs delays the finding by one check.
type MoveWatch struct {
	ctx    context.Context
	client metadata.Interface // the controller's own identity
	log    *zap.Logger

	mu      sync.Mutex
	epoch   uint64 // counts watch (re)starts
	watches map[schema.GroupVersionResource]*resourceWatch
	buckets [moveBuckets]uint64 // events per hash of object identity
	settled map[string]Mark     // by repository
}

// moveBuckets is the size of the event table: two objects sharing a bucket
// only cost a check its shortcut when the other one moves.
const moveBuckets = 4096

// Mark is a point in the event counts of one repository's objects.
type Mark struct{ epoch, sum uint64 }

type resourceWatch struct {
	established bool
	since       uint64 // the epoch its current watch started in
}

// MovedObject names one object of a repository, as the watch sees it.
type MovedObject struct {
	Resource  schema.GroupVersionResource
	Namespace string
	Name      string
}

// newMoveWatch returns a MoveWatch whose watches run until ctx is done.
func newMoveWatch(ctx context.Context, client metadata.Interface, log *zap.Logger) *MoveWatch {
	if log == nil {
		log = zap.NewNop()
	}
	return &MoveWatch{ctx: ctx, client: client, log: log,
		watches: map[schema.GroupVersionResource]*resourceWatch{}, settled: map[string]Mark{}}
}

// Mark returns the event count of objs now: take it before the list whose
// finding Settle records.
func (w *MoveWatch) Mark(objs []MovedObject) Mark {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Mark{w.epoch, w.sumLocked(objs)}
}

// Settle records that key's objects were all in place at the list that
// followed mark.
func (w *MoveWatch) Settle(key string, mark Mark) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.settled[key] = mark
}

// Quiet reports that none of objs (key's objects) can have moved since
// they were last settled. It starts the watches of resources not yet
// watched, so the first check of a kind always lists.
func (w *MoveWatch) Quiet(key string, objs []MovedObject) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, ok := w.settled[key]
	quiet := ok
	for _, o := range objs {
		rw, watched := w.watches[o.Resource]
		if !watched {
			rw = &resourceWatch{}
			w.watches[o.Resource] = rw
			go w.run(o.Resource)
		}
		quiet = quiet && rw.established && rw.since <= m.epoch
	}
	return quiet && w.sumLocked(objs) == m.sum
}

// Forget drops a removed repository's mark.
func (w *MoveWatch) Forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.settled, key)
}

func (w *MoveWatch) sumLocked(objs []MovedObject) uint64 {
	var sum uint64
	for _, o := range objs {
		sum += w.buckets[bucket(o)]
	}
	return sum
}

// bucket hashes an object's identity (FNV-1a).
func bucket(o MovedObject) int {
	h := fnv.New32a()
	for _, part := range []string{o.Resource.Group, o.Resource.Resource, o.Namespace, o.Name} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return int(h.Sum32() % moveBuckets)
}

// run keeps gvr watched until the MoveWatch's context ends: it starts at
// the current resourceVersion (no initial events), resumes from the last
// one it saw when the API server closes the watch, and starts over, in a
// new epoch, when it cannot resume. The backoff between starts resets only
// after a watch that lasted, so a resource that lists but cannot be
// watched is retried slowly.
func (w *MoveWatch) run(gvr schema.GroupVersionResource) {
	delay := time.Second
	for w.ctx.Err() == nil {
		began := time.Now()
		rv, err := w.start(gvr)
		if err == nil {
			err = w.follow(gvr, rv)
		}
		w.setEstablished(gvr, false)
		if w.ctx.Err() != nil {
			return
		}
		if time.Since(began) > 5*time.Minute {
			delay = time.Second
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
// and opens a new epoch for it.
func (w *MoveWatch) start(gvr schema.GroupVersionResource) (string, error) {
	list, err := w.client.Resource(gvr).List(w.ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelName, Limit: 1})
	if err != nil {
		return "", fmt.Errorf("list %s: %w", gvr, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.epoch++
	rw := w.watches[gvr]
	rw.established, rw.since = true, w.epoch
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
		if rv, err = w.drain(gvr, wi, rv); err != nil {
			return fmt.Errorf("watch %s: %w", gvr, err)
		}
	}
}

// drain counts the events of one watch until the server closes it, and
// returns the resourceVersion to resume from. An error event (410 Gone
// when rv was compacted away, or any other) ends the continuity.
func (w *MoveWatch) drain(gvr schema.GroupVersionResource, wi watch.Interface, rv string) (string, error) {
	defer wi.Stop()
	for ev := range wi.ResultChan() {
		if ev.Type == watch.Error {
			return "", apierrors.FromObject(ev.Object)
		}
		obj, ok := ev.Object.(*metav1.PartialObjectMetadata)
		if !ok {
			return "", fmt.Errorf("unexpected %s event of %T", ev.Type, ev.Object)
		}
		rv = obj.ResourceVersion
		if ev.Type == watch.Bookmark {
			continue
		}
		w.count(MovedObject{Resource: gvr, Namespace: obj.Namespace, Name: obj.Name})
	}
	return rv, nil
}

// count adds an event of one object.
func (w *MoveWatch) count(o MovedObject) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buckets[bucket(o)]++
}

func (w *MoveWatch) setEstablished(gvr schema.GroupVersionResource, v bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watches[gvr].established = v
}
