package actors

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// hungTimers returns a recorder whose syncs of repositories named t* block
// until one value is sent on release (or the sync is cancelled); other
// repositories sync at once.
func hungTimers() (*recorder, chan struct{}) {
	release := make(chan struct{})
	rec := &recorder{fn: func(ctx context.Context, repo *v1alpha1.GitRepository, _ SyncRequest) error {
		if !strings.HasPrefix(repo.Name, "t") {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	return rec, release
}

// floodSlots fills both slots with hung startup syncs of t0 and t1 and
// queues the startup syncs of t2..t4 behind them.
func floodSlots(t *testing.T, s *System, rec *recorder) {
	t.Helper()
	for i := 0; i < 5; i++ {
		s.Upsert(newRepo("ns", fmt.Sprintf("t%d", i), 1, time.Hour))
	}
	waitEntered(t, rec, 2)
	waitLanes(t, s, 0, 3)
}

// startOrder lists "key trigger" of every sync started so far.
func startOrder(rec *recorder) []string {
	var out []string
	for _, c := range rec.all() {
		out = append(out, c.key+" "+string(c.req.Trigger))
	}
	return out
}

// TestWebhookSyncOvertakesQueuedTimerSyncs: with every slot held by a hung
// timer sync and more timer syncs queued, a webhook for an idle repository
// takes the first slot that frees.
func TestWebhookSyncOvertakesQueuedTimerSyncs(t *testing.T) {
	rec, release := hungTimers()
	s := start(t, Config{Syncer: rec, MaxConcurrentSyncs: 2})
	s.Upsert(newRepo("ns", "w", 1, time.Hour))
	waitStatus(t, s, "ns/w", "first sync finished", func(st RepoStatus) bool { return st.Syncs == 1 })
	floodSlots(t, s, rec)

	webhookAndWaitQueued(t, s, "w")
	waitLanes(t, s, 1, 3)
	release <- struct{}{} // one slot frees
	waitStatus(t, s, "ns/w", "webhook sync finished", func(st RepoStatus) bool { return st.Syncs == 2 })
	got := startOrder(rec)
	if len(got) < 4 || got[3] != "ns/w webhook" {
		t.Fatalf("starts %v: want the webhook sync of ns/w fourth, right after the startup syncs of w, t0 and t1", got)
	}
	close(release)
}

// TestWebhookPromotesQueuedTimerSync: a repository whose startup sync is
// still queued behind timer work when its webhook arrives moves to the
// urgent lane: its queued sync starts first when a slot frees.
func TestWebhookPromotesQueuedTimerSync(t *testing.T) {
	rec, release := hungTimers()
	s := start(t, Config{Syncer: rec, MaxConcurrentSyncs: 2})
	floodSlots(t, s, rec)
	s.Upsert(newRepo("ns", "w", 1, time.Hour))
	waitLanes(t, s, 0, 4) // w's startup sync behind t2..t4

	webhookAndWaitQueued(t, s, "w")
	waitLanes(t, s, 1, 3) // promoted
	release <- struct{}{}
	waitStatus(t, s, "ns/w", "startup sync finished, webhook follow-up queued", func(st RepoStatus) bool {
		return st.Syncs == 1 && st.State == StateSyncing && st.LastTrigger == TriggerWebhook
	})
	waitLanes(t, s, 1, 2) // the follow-up, behind t3 and t4
	if got := startOrder(rec); len(got) < 3 || got[2] != "ns/w startup" {
		t.Fatalf("starts %v: want the promoted startup sync of ns/w third, before t2..t4", got)
	}
	// The slot w's startup sync freed went to t2 before the follow-up was
	// queued; the next slot to free goes to the follow-up, not to t3.
	release <- struct{}{}
	waitStatus(t, s, "ns/w", "webhook follow-up finished", func(st RepoStatus) bool { return st.Syncs == 2 })
	if got := startOrder(rec); len(got) < 5 || got[4] != "ns/w webhook" {
		t.Fatalf("starts %v: want the webhook follow-up of ns/w fifth, before t3 and t4", got)
	}
	close(release)
}

// webhookAndWaitQueued sends a webhook for ns/name and waits until the
// actor holds it (as a running or queued sync, or as a follow-up), so that
// the test frees a slot only after the webhook is in line.
func webhookAndWaitQueued(t *testing.T, s *System, name string) {
	t.Helper()
	if err := s.Webhook(types.NamespacedName{Namespace: "ns", Name: name}, "abc"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "ns/"+name, "webhook queued", func(st RepoStatus) bool {
		return st.State == StateSyncing && (st.LastTrigger == TriggerWebhook || st.Pending)
	})
}

// blackholed is a Syncer whose repositories named b* wait on their git
// host for ever (until cancelled) before they would ask for a slot; the
// others take a slot and finish.
type blackholed struct{ rec *recorder }

func (b blackholed) Sync(ctx context.Context, repo *v1alpha1.GitRepository, req SyncRequest, mem Memory) (Memory, error) {
	if strings.HasPrefix(repo.Name, "b") {
		<-ctx.Done()
		return mem, ctx.Err()
	}
	return b.rec.Sync(ctx, repo, req, mem)
}

// TestFetchesHoldNoSlot: more repositories than slots hang on a git host
// that never answers; a webhook sync of a healthy repository still gets a
// slot at once, because a sync asks for one only after its fetch.
func TestFetchesHoldNoSlot(t *testing.T) {
	rec := &recorder{}
	s := start(t, Config{Syncer: blackholed{rec}, MaxConcurrentSyncs: 2})
	for i := range 6 {
		s.Upsert(newRepo("ns", fmt.Sprintf("b%d", i), 1, time.Hour))
	}
	for i := range 6 {
		waitStatus(t, s, fmt.Sprintf("ns/b%d", i), "hanging on git", func(st RepoStatus) bool { return st.State == StateSyncing })
	}
	s.Upsert(newRepo("ns", "w", 1, time.Hour))
	waitStatus(t, s, "ns/w", "startup sync done", func(st RepoStatus) bool { return st.Syncs == 1 })
	if err := s.Webhook(types.NamespacedName{Namespace: "ns", Name: "w"}, "abc"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "ns/w", "webhook sync done", func(st RepoStatus) bool { return st.Syncs == 2 })
	if got := triggers(rec.of("ns/w")); !reflect.DeepEqual(got, []Trigger{TriggerStartup, TriggerWebhook}) {
		t.Fatalf("w's syncs %v, want startup and webhook", got)
	}
	// Hung fetches are cancelled by a shutdown that runs out of patience.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
}
