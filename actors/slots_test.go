package actors

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestMaxConcurrentSyncsBoundsRunningSyncs: six repositories start at once
// with room for two syncs; never more than two run, all six finish, and the
// wait for a slot does not eat into a sync's timeout.
func TestMaxConcurrentSyncsBoundsRunningSyncs(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	rec := &recorder{fn: func(ctx context.Context, repo *v1alpha1.GitRepository, req SyncRequest) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if d, ok := ctx.Deadline(); !ok || time.Until(d) < 30*time.Second {
			return fmt.Errorf("sync deadline in %v: the slot wait ate the timeout", time.Until(d))
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}}
	s := start(t, Config{Syncer: rec, MaxConcurrentSyncs: 2})
	for i := 0; i < 6; i++ {
		s.Upsert(newRepo("ns", fmt.Sprintf("r%d", i), 1, time.Hour))
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := running.Load(); n != 2 {
			return fmt.Errorf("%d syncs running, want 2", n)
		}
		return nil
	})
	close(release)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := len(rec.all()); n != 6 {
			return fmt.Errorf("%d syncs started, want 6", n)
		}
		return nil
	})
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrent syncs = %d, want 2", p)
	}
	for i := 0; i < 6; i++ {
		key := fmt.Sprintf("ns/r%d", i)
		st := waitStatus(t, s, key, "first sync finished", func(st RepoStatus) bool { return st.Syncs >= 1 })
		if st.LastError != nil {
			t.Fatalf("%s: %v", key, st.LastError)
		}
	}
}

// TestQueuedSyncsDoNotStartOnceShutdownBegan: with one slot taken, a sync
// waiting for it never starts after Shutdown.
func TestQueuedSyncsDoNotStartOnceShutdownBegan(t *testing.T) {
	rec := &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, _ SyncRequest) error {
		<-ctx.Done() // holds the only slot until Shutdown cancels it
		return ctx.Err()
	}}
	s := NewSystem(Config{Syncer: rec, MaxConcurrentSyncs: 1})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitEntered(t, rec, 1)
	s.Upsert(newRepo("ns", "b", 1, time.Hour))
	waitStatus(t, s, "ns/b", "queued for a slot", func(st RepoStatus) bool { return st.State == StateSyncing })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
	if got := rec.of("ns/b"); len(got) != 0 {
		t.Fatalf("ns/b synced %d times after Shutdown began, want 0", len(got))
	}
}
