package actors

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// A stalled sync schedules no retry: only a new trigger syncs again.
func TestStalledSyncIsNotRetried(t *testing.T) {
	rec := &recorder{fn: func(context.Context, *v1alpha1.GitRepository, SyncRequest) error {
		return fmt.Errorf("manifests do not parse: %w", ErrStalled)
	}}
	s := start(t, Config{Syncer: rec, Backoff: Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitStatus(t, s, "ns/a", "the startup sync stalled", func(st RepoStatus) bool { return st.Syncs == 1 })
	testenv.Consistently(t, 300*time.Millisecond, 10*time.Millisecond, func() error { // 15 backoff periods
		if n := len(rec.of("ns/a")); n != 1 {
			return fmt.Errorf("%d syncs of a stalled repository, want 1 (no retry)", n)
		}
		return nil
	})
	if err := s.SyncNow(context.Background(), "ns/a"); !errors.Is(err, ErrStalled) || len(rec.of("ns/a")) != 2 {
		t.Fatalf("a manual request must sync again: err %v, %d syncs", err, len(rec.of("ns/a")))
	}
}

// A repository whose sync failed on an unreachable API server is woken when
// the API server answers again, not after the backoff the outage built up.
func TestAPIRecoveryWakesWaitingRepositories(t *testing.T) {
	var apiUp, failing atomic.Bool
	failing.Store(true)
	rec := &recorder{fn: func(_ context.Context, repo *v1alpha1.GitRepository, _ SyncRequest) error {
		if repo.Name == "a" && failing.Load() {
			return fmt.Errorf("apply: connection refused: %w", ErrAPIUnreachable)
		}
		return nil
	}}
	s := start(t, Config{Syncer: rec, Backoff: Backoff{Base: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.WatchAPI(ctx, func(context.Context) error {
		if !apiUp.Load() {
			return errors.New("connection refused")
		}
		return nil
	}, 20*time.Millisecond, 50*time.Millisecond)
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	s.Upsert(newRepo("ns", "b", 1, time.Hour))
	waitStatus(t, s, "ns/a", "the first sync failed", func(st RepoStatus) bool { return st.Syncs == 1 && st.LastError != nil })
	waitStatus(t, s, "ns/b", "the first sync", func(st RepoStatus) bool { return st.Syncs == 1 })

	failing.Store(false)
	apiUp.Store(true)
	woken := time.Now()
	waitStatus(t, s, "ns/a", "the repository woken", func(st RepoStatus) bool { return st.Syncs == 2 && st.LastError == nil })
	if took := time.Since(woken); took > 3*time.Second {
		t.Fatalf("woken after %v, want within seconds", took)
	}
	testenv.Eventually(t, time.Second, func() error {
		if n := s.apiWaiting.Load(); n != 0 {
			return fmt.Errorf("%d repositories still wait for the API server", n)
		}
		return nil
	})
	if n := len(rec.of("ns/b")); n != 1 {
		t.Fatalf("%d syncs of a healthy repository, want it left alone", n)
	}
}
