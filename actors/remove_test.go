package actors

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

func TestRemoveCancelsTheRunningSyncThenCallsOnRemove(t *testing.T) {
	returned := make(chan struct{}, 2)
	rec := &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, req SyncRequest) error {
		defer func() { returned <- struct{}{} }()
		if req.Trigger == TriggerStartup && len(returned) == 0 {
			<-ctx.Done() // the first sync runs until the removal cancels it
			return ctx.Err()
		}
		return nil
	}}
	removed := make(chan string, 2)
	s := start(t, Config{Syncer: rec, OnRemove: func(key string) {
		if len(returned) == 0 {
			t.Errorf("OnRemove(%s) ran before the sync returned", key)
		}
		removed <- key
	}})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitEntered(t, rec, 1)

	s.Remove("ns/a")
	s.Upsert(newRepo("ns", "a", 1, time.Hour)) // re-created while the old actor stops
	if key := recv(t, removed, "OnRemove after Remove"); key != "ns/a" {
		t.Fatalf("OnRemove(%q), want ns/a", key)
	}
	waitStatus(t, s, "ns/a", "the re-created repository synced", func(st RepoStatus) bool { return st.Syncs == 1 && st.LastError == nil })
	if n := countTrigger(rec.of("ns/a"), TriggerStartup); n != 2 {
		t.Fatalf("%d startup syncs, want one per incarnation (2)", n)
	}
}

func TestRemoveStopsACrashedActorWaitingForItsRestart(t *testing.T) {
	rec := &recorder{fn: func(context.Context, *v1alpha1.GitRepository, SyncRequest) error { panic("boom") }}
	removed := make(chan string, 1)
	core, logs := observer.New(zapcore.ErrorLevel)
	s := start(t, Config{Syncer: rec, Logger: zap.New(core), Backoff: Backoff{Base: time.Hour}, OnRemove: func(key string) { removed <- key }})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	testenv.Eventually(t, 5*time.Second, func() error {
		if logs.FilterMessage("repository actor crashed; restarting it").Len() != 1 {
			return fmt.Errorf("no crash handled yet; logs: %v", logs.All())
		}
		return nil
	})

	s.Remove("ns/a")
	if key := recv(t, removed, "OnRemove after Remove"); key != "ns/a" {
		t.Fatalf("OnRemove(%q), want ns/a", key)
	}
	if keys := s.Keys(); len(keys) != 0 {
		t.Fatalf("actors left after removal: %v", keys)
	}
}
