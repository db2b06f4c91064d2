package actors

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/false-systems/alumiini/cache"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

func gitRepository(ns, name, interval string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "GitRepository",
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec":       map[string]any{"url": "https://git.example/" + name + ".git", "interval": interval},
	}}
}

func TestWatchRunsOneActorPerRepositoryAndEvictsOnDelete(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := env.Namespace(t)
	// A client of its own, so that its idle connections can be closed for
	// the leak check.
	httpClient, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfigAndClient(env.Config, httpClient)
	if err != nil {
		t.Fatal(err)
	}
	repos := dyn.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	const n = 100
	for i := range n {
		if _, err := repos.Create(ctx, gitRepository(ns, fmt.Sprintf("repo-%03d", i), "1h"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	rec := &recorder{}
	var c *cache.Client
	s := NewSystem(Config{
		Syncer: rec,
		OnRemove: func(key string) {
			if err := c.Evict(context.Background(), key); err != nil {
				t.Errorf("evict %s: %v", key, err)
			}
		},
	})
	c = cache.Start(s.Root(), 0)
	rec.fn = func(ctx context.Context, repo *v1alpha1.GitRepository, _ SyncRequest) error {
		return c.Put(ctx, repo.Key(), cache.Entry{Commit: "abc123"})
	}
	informer, stopInformer := runInformer(dyn, ns)
	if err := s.WatchInformer(ctx, informer); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if k := len(s.Keys()); k != n {
			return fmt.Errorf("%d actors, want %d", k, n)
		}
		if got := countTrigger(rec.all(), TriggerStartup); got != n {
			return fmt.Errorf("%d startup syncs, want %d", got, n)
		}
		return nil
	})

	// An informer relist or resync hands every object over again: no new
	// actor and no new sync may follow. SyncNow on each is the barrier.
	list, err := repos.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		repo, err := toRepository(&list.Items[i])
		if err != nil {
			t.Fatal(err)
		}
		s.Upsert(repo)
	}
	for _, key := range s.Keys() {
		if err := s.SyncNow(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if k, calls := len(s.Keys()), rec.all(); k != n || len(calls) != 2*n || countTrigger(calls, TriggerStartup) != n {
		t.Fatalf("after a replay: %d actors and %d syncs (%d startup), want %d, %d, %d", k, len(calls), countTrigger(calls, TriggerStartup), n, 2*n, n)
	}

	gone := ns + "/repo-042"
	if _, ok, err := c.Get(ctx, gone); err != nil || !ok {
		t.Fatalf("cache entry of %s before delete: ok=%v err=%v", gone, ok, err)
	}
	if err := repos.Delete(ctx, "repo-042", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		keys := s.Keys()
		if len(keys) != n-1 || slices.Contains(keys, gone) {
			return fmt.Errorf("%d actors, %s among them: %v", len(keys), gone, slices.Contains(keys, gone))
		}
		// OnRemove runs on its own goroutine after the actor has gone, so
		// the eviction may land a moment after the key leaves Keys.
		if _, ok, err := c.Get(ctx, gone); err != nil || ok {
			return fmt.Errorf("cache entry of deleted %s: ok=%v err=%v, want evicted", gone, ok, err)
		}
		return nil
	})
	if _, ok, err := c.Get(ctx, ns+"/repo-043"); err != nil || !ok {
		t.Fatalf("cache entry of a kept repository: ok=%v err=%v, want kept", ok, err)
	}

	s.Shutdown(ctx)
	stopInformer()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	httpClient.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}

func TestSpecChangesSyncStatusChangesDoNotAndRequestedAtSyncsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := env.Namespace(t)
	key := ns + "/app"
	repos := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	rec := &recorder{}
	s := start(t, Config{Syncer: rec})
	informer, stopInformer := runInformer(env.Dynamic, ns)
	defer stopInformer()
	if err := s.WatchInformer(ctx, informer); err != nil {
		t.Fatal(err)
	}
	obj, err := repos.Create(ctx, gitRepository(ns, "app", "1h"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, key, "startup sync done", func(st RepoStatus) bool { return st.Syncs == 1 })

	// change applies fn to the live object, waits until the actor holds the
	// result, then syncs now: SyncNow's manual sync lands after any sync the
	// change caused, so the calls in between are exactly the change's.
	change := func(what string, fn func(*unstructured.Unstructured) (*unstructured.Unstructured, error)) []SyncRequest {
		t.Helper()
		before := len(rec.of(key))
		updated, err := fn(obj.DeepCopy())
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		obj = updated
		waitStatus(t, s, key, what+" seen", func(st RepoStatus) bool { return st.ResourceVersion == obj.GetResourceVersion() })
		if err := s.SyncNow(ctx, key); err != nil {
			t.Fatal(err)
		}
		calls := rec.of(key)[before:]
		last := calls[len(calls)-1].req
		if !reflect.DeepEqual(last, SyncRequest{Trigger: TriggerManual}) {
			t.Fatalf("%s: last sync %+v is not SyncNow's", what, last)
		}
		var out []SyncRequest
		for _, c := range calls[:len(calls)-1] {
			out = append(out, c.req)
		}
		return out
	}
	update := func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return repos.Update(ctx, u, metav1.UpdateOptions{})
	}
	updateStatus := func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		return repos.UpdateStatus(ctx, u, metav1.UpdateOptions{})
	}

	tests := []struct {
		what string
		fn   func(*unstructured.Unstructured) (*unstructured.Unstructured, error)
		want []SyncRequest
	}{
		{"status-only change", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			_ = unstructured.SetNestedField(u.Object, "Synced", "status", "phase")
			return updateStatus(u)
		}, nil},
		{"spec change", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			_ = unstructured.SetNestedField(u.Object, "release", "spec", "branch")
			return update(u)
		}, []SyncRequest{{Trigger: TriggerSpec}}},
		{"label change", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			u.SetLabels(map[string]string{"team": "a"})
			return update(u)
		}, nil},
		{"new requestedAt", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			u.SetAnnotations(map[string]string{v1alpha1.AnnotationRequestedAt: "t1"})
			return update(u)
		}, []SyncRequest{{Trigger: TriggerManual, RequestedAt: "t1"}}},
		{"same requestedAt again", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			u.SetLabels(map[string]string{"team": "b"})
			return update(u)
		}, nil},
		{"lastHandledRequestedAt recorded", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			_ = unstructured.SetNestedField(u.Object, "t2", "status", "lastHandledRequestedAt")
			return updateStatus(u)
		}, nil},
		{"requestedAt already handled", func(u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
			u.SetAnnotations(map[string]string{v1alpha1.AnnotationRequestedAt: "t2"})
			return update(u)
		}, nil},
	}
	for _, tt := range tests {
		if got := change(tt.what, tt.fn); !reflect.DeepEqual(got, tt.want) {
			t.Fatalf("%s caused syncs %+v, want %+v", tt.what, got, tt.want)
		}
	}
	if st := status(t, s, key); st.Generation != 2 {
		t.Fatalf("actor holds generation %d, want 2 after one spec change", st.Generation)
	}
}

func TestWatchInformerSharedAcrossLeadershipTerms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := env.Namespace(t)
	repos := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := repos.Create(ctx, gitRepository(ns, name, "1h"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	informer, stopInformer := runInformer(env.Dynamic, ns)
	defer stopInformer()

	want := []string{ns + "/a", ns + "/b", ns + "/c"}
	for term := range 2 {
		rec := &recorder{}
		s := NewSystem(Config{Syncer: rec})
		if err := s.WatchInformer(ctx, informer); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			if keys := s.Keys(); !slices.Equal(keys, want) {
				return fmt.Errorf("term %d: actors %v, want %v", term, keys, want)
			}
			return nil
		})
		s.Shutdown(ctx)
	}
	if !informer.HasSynced() || informer.IsStopped() {
		t.Fatal("Shutdown stopped an informer the System did not own")
	}
}
