package k8s

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// TestMoveWatchQuiet pins when a check may skip its list: only after a
// settle, with no event for the repository since its mark, in the same
// epoch, with every watch it relies on established.
func TestMoveWatchQuiet(t *testing.T) {
	cms := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	labels := map[string]string{v1alpha1.LabelNamespace: "ns", v1alpha1.LabelName: "r"}
	cases := []struct {
		name  string
		after func(w *MoveWatch, mark Mark) // between the mark and the check
		want  bool
	}{
		{"settled, nothing since", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m) }, true},
		{"never settled", func(w *MoveWatch, m Mark) {}, false},
		{"an event during the list", func(w *MoveWatch, m Mark) { w.count(labels); w.Settle("ns/r", m) }, false},
		{"an event after the settle", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.count(labels) }, false},
		{"another repository's event", func(w *MoveWatch, m Mark) {
			w.Settle("ns/r", m)
			w.count(map[string]string{v1alpha1.LabelNamespace: "ns", v1alpha1.LabelName: "other"})
		}, true},
		{"a watch restarted (new epoch)", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.epoch++ }, false},
		{"a watch down now", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.setEstablished(cms, false) }, false},
		{"forgotten", func(w *MoveWatch, m Mark) { w.Settle("ns/r", m); w.Forget("ns/r") }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newMoveWatch(context.Background(), nil, nil)
			w.watches[cms] = &resourceWatch{established: true} // no goroutine: the test plays the watch
			c.after(w, w.Mark("ns/r"))
			if got := w.Quiet("ns/r", []schema.GroupVersionResource{cms}); got != c.want {
				t.Fatalf("Quiet = %v, want %v", got, c.want)
			}
		})
	}
	w := newMoveWatch(context.Background(), nil, nil)
	w.count(labels)
	if len(w.repos) != 0 {
		t.Fatalf("an event of a repository never marked was kept: %v", w.repos)
	}
}
