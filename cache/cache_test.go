package cache

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

func startCache(t *testing.T) *Client {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	t.Cleanup(system.Shutdown)
	return Start(system.Root, time.Second)
}

func TestPutGetEvict(t *testing.T) {
	c := startCache(t)
	ctx := context.Background()
	entry := Entry{Commit: "abc123", Generation: 3, Hashes: map[string]string{"/v1/ConfigMap/ns/settings": "h1"}}

	if _, ok, err := c.Get(ctx, "ns/app"); err != nil || ok {
		t.Fatalf("Get before Put: ok=%v err=%v, want a miss", ok, err)
	}
	if err := c.Put(ctx, "ns/app", entry); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "ns/other", Entry{Commit: "def456"}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(ctx, "ns/app")
	if err != nil || !ok {
		t.Fatalf("Get after Put: ok=%v err=%v", ok, err)
	}
	if got.Commit != "abc123" || got.Generation != 3 || got.Hashes["/v1/ConfigMap/ns/settings"] != "h1" {
		t.Fatalf("Get = %+v, want what was Put", got)
	}
	if err := c.Evict(ctx, "ns/app"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(ctx, "ns/app"); err != nil || ok {
		t.Fatalf("Get after Evict: ok=%v err=%v, want a miss", ok, err)
	}
	if other, ok, err := c.Get(ctx, "ns/other"); err != nil || !ok || other.Commit != "def456" {
		t.Fatalf("Evict touched another key: %+v ok=%v err=%v", other, ok, err)
	}
}

func TestExpiredContext(t *testing.T) {
	c := startCache(t)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, _, err := c.Get(ctx, "ns/app"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with an expired context = %v, want DeadlineExceeded", err)
	}
}

func TestStoppedCacheAnswersWithAnError(t *testing.T) {
	c := startCache(t)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.Put(context.Background(), "ns/app", Entry{})
	if !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("Put after Stop = %v, want a dead-letter error", err)
	}
	if took := time.Since(start); took >= time.Second {
		t.Fatalf("Put after Stop took %v: it waited for the timeout instead of failing fast", took)
	}
}
