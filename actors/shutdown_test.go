package actors

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// blockingSync returns a Syncer whose syncs run until release is closed or
// their context ends, reporting which on ended.
func blockingSync(release <-chan struct{}, ended chan<- error) *recorder {
	return &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, _ SyncRequest) error {
		select {
		case <-release:
			ended <- nil
		case <-ctx.Done():
			ended <- ctx.Err()
		}
		return nil
	}}
}

// waitEntered waits until n syncs have entered the Syncer: an actor that
// says it is syncing may still be waiting for a slot.
func waitEntered(t *testing.T, rec *recorder, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := len(rec.all()); got < n {
			return fmt.Errorf("%d syncs entered, want %d", got, n)
		}
		return nil
	})
}

func TestShutdownWaitsForRunningSyncs(t *testing.T) {
	release, ended := make(chan struct{}), make(chan error, 1)
	rec := blockingSync(release, ended)
	s := NewSystem(Config{Syncer: rec})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitEntered(t, rec, 1)

	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		close(done)
	}()
	testenv.Eventually(t, 5*time.Second, func() error {
		if keys := s.Keys(); len(keys) != 0 {
			return fmt.Errorf("actors still alive: %v", keys)
		}
		return nil
	})
	select {
	case <-done:
		t.Fatal("Shutdown returned while a sync was running")
	default:
	}
	close(release)
	recv(t, done, "Shutdown to return after the sync finished")
	if err := recv(t, ended, "the running sync to end"); err != nil {
		t.Fatalf("the running sync ended with %v, want it to finish undisturbed", err)
	}
}

func TestShutdownCancelsSyncsWhenItsContextEnds(t *testing.T) {
	release, ended := make(chan struct{}), make(chan error, 1)
	defer close(release)
	rec := blockingSync(release, ended)
	s := NewSystem(Config{Syncer: rec})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitEntered(t, rec, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
	if err := recv(t, ended, "the running sync to end"); !errors.Is(err, context.Canceled) {
		t.Fatalf("the running sync ended with %v, want it cancelled", err)
	}
	informer, stopInformer := runInformer(env.Dynamic, "default")
	defer stopInformer()
	if err := s.WatchInformer(context.Background(), informer); err == nil {
		t.Fatal("WatchInformer after Shutdown succeeded, want an error")
	}
}
