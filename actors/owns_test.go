package actors

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestOwnsFiltersRepositoriesAndReconsiderMovesThem: with Config.Owns (as
// in cluster mode) only owned repositories get an actor; when ownership
// changes, Reconsider starts the newly owned ones and removes the others
// (OnRemove runs for them, evicting their cache and checkout).
func TestOwnsFiltersRepositoriesAndReconsiderMovesThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := env.Namespace(t)
	repos := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	var even, odd []string
	for i := range 10 {
		name := fmt.Sprintf("repo-%d", i)
		if _, err := repos.Create(ctx, gitRepository(ns, name, "1h"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			even = append(even, ns+"/"+name)
		} else {
			odd = append(odd, ns+"/"+name)
		}
	}
	var mine atomic.Pointer[[]string]
	mine.Store(&even)
	var mu sync.Mutex
	var removed []string
	s := start(t, Config{
		Syncer: &recorder{},
		Owns:   func(key string) bool { return slices.Contains(*mine.Load(), key) },
		OnRemove: func(key string) {
			mu.Lock()
			defer mu.Unlock()
			removed = append(removed, key)
		},
	})
	informer, stop := runInformer(env.Dynamic, ns)
	defer stop()
	if err := s.WatchInformer(ctx, informer); err != nil {
		t.Fatal(err)
	}
	wantKeys := func(want []string) func() error {
		return func() error {
			got := s.Keys()
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("actors for %s, want %s", strings.Join(got, " "), strings.Join(want, " "))
			}
			return nil
		}
	}
	testenv.Eventually(t, 10*time.Second, wantKeys(even))

	mine.Store(&odd)
	s.Reconsider()
	testenv.Eventually(t, 10*time.Second, wantKeys(odd))
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		got := slices.Sorted(slices.Values(removed))
		if !slices.Equal(got, even) {
			return fmt.Errorf("OnRemove ran for %v, want the repositories no longer owned %v", got, even)
		}
		return nil
	})
}
