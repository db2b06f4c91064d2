package k8s

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
)

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// TestMoveWatchQuiet pins when a check may skip its list: only after a
// settle, with no event for any of the repository's objects since its
// mark, with every watch it relies on established and not restarted since.
func TestMoveWatchQuiet(t *testing.T) {
	mine := []MovedObject{{configMaps, "ns", "a"}, {configMaps, "ns", "b"}}
	cases := []struct {
		name  string
		after func(w *MoveWatch, mark Mark) // between the mark and the check
		want  bool
	}{
		{"settled, nothing since", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m) }, true},
		{"never settled", func(w *MoveWatch, m Mark) {}, false},
		{"an event during the list", func(w *MoveWatch, m Mark) { w.count(mine[1]); w.Settle("ns/r", m) }, false},
		{"an event after the settle", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.count(mine[0]) }, false},
		{"another object's event", func(w *MoveWatch, m Mark) {
			w.Settle("ns/r", m)
			w.count(MovedObject{configMaps, "ns", "c"}) // may share a bucket: then only the shortcut is lost
		}, bucket(MovedObject{configMaps, "ns", "c"}) != bucket(mine[0]) && bucket(MovedObject{configMaps, "ns", "c"}) != bucket(mine[1])},
		{"the watch restarted", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.epoch++; w.watches[configMaps].since = w.epoch }, false},
		{"another resource's watch restarted", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.epoch++ }, true},
		{"the watch down now", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.setEstablished(configMaps, false) }, false},
		{"forgotten", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.Forget("ns/r") }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newMoveWatch(context.Background(), nil, nil)
			w.epoch = 1
			w.watches[configMaps] = &resourceWatch{established: true, since: 1} // no goroutine: the test plays the watch
			c.after(w, w.Mark(mine))
			if got := w.Quiet("ns/r", mine); got != c.want {
				t.Fatalf("Quiet = %v, want %v", got, c.want)
			}
		})
	}
}

// TestMoveWatchDrain: every event but a bookmark counts for its object,
// whatever its labels say; the resourceVersion to resume from follows
// every event; an error or an unexpected event ends the continuity.
func TestMoveWatchDrain(t *testing.T) {
	obj := func(name, rv string, labels map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv, Labels: labels}}
	}
	w := newMoveWatch(context.Background(), nil, nil)
	a := MovedObject{configMaps, "ns", "a"}
	fake := watch.NewFake()
	go func() {
		fake.Modify(obj("a", "11", map[string]string{"alumiini.false.systems/name": "another-repository"}))
		fake.Action(watch.Bookmark, obj("", "12", nil))
		fake.Stop()
	}()
	rv, err := w.drain(configMaps, fake, "10")
	if err != nil || rv != "12" {
		t.Fatalf("drain = %q, %v; want to resume from 12", rv, err)
	}
	if got := w.buckets[bucket(a)]; got != 1 {
		t.Fatalf("the relabelled object counted %d events, want 1 (the bookmark counts none)", got)
	}

	for _, ev := range []watch.Event{
		{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired}},
		{Type: watch.Modified, Object: &metav1.Status{}},
	} {
		fake := watch.NewFake()
		go func() { fake.Action(ev.Type, ev.Object) }()
		if _, err := w.drain(configMaps, fake, "12"); err == nil {
			t.Fatalf("drain went on after a %s event of %T", ev.Type, ev.Object)
		}
	}
}
