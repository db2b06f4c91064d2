package actors

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

func TestStatusAnsweredWhileSyncing(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	rec := &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, _ SyncRequest) error {
		return await(ctx, release)
	}}
	s := start(t, Config{Syncer: rec})
	s.Upsert(newRepo("ns", "a", 7, time.Hour))

	st := waitStatus(t, s, "ns/a", "syncing", func(st RepoStatus) bool { return st.State == StateSyncing })
	if st.LastTrigger != TriggerStartup || st.Generation != 7 || st.Syncs != 0 {
		t.Fatalf("status during the startup sync = %+v, want trigger startup, generation 7, 0 syncs", st)
	}
}

// syncingAtStartup starts repository ns/a, under cfg, whose startup sync
// runs until release is closed; the other syncs return at once, with the
// error of other when set.
func syncingAtStartup(t *testing.T, cfg Config, other func(SyncRequest) error) (s *System, rec *recorder, release chan struct{}) {
	release = make(chan struct{})
	rec = &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, req SyncRequest) error {
		if req.Trigger == TriggerStartup {
			return await(ctx, release)
		}
		if other != nil {
			return other(req)
		}
		return nil
	}}
	cfg.Syncer = rec
	s = start(t, cfg)
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitStatus(t, s, "ns/a", "startup sync running", func(st RepoStatus) bool { return st.State == StateSyncing })
	return s, rec, release
}

func TestWebhooksDuringSlowSyncCoalesceIntoOneFollowUp(t *testing.T) {
	s, rec, release := syncingAtStartup(t, Config{}, nil)

	key := types.NamespacedName{Namespace: "ns", Name: "a"}
	for i := range 50 {
		if err := s.Webhook(key, fmt.Sprintf("commit-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The mailbox is FIFO: this answer comes after all 50 webhooks.
	if st := status(t, s, "ns/a"); st.State != StateSyncing || !st.Pending {
		t.Fatalf("after 50 webhooks status = %+v, want syncing with one follow-up pending", st)
	}
	close(release)

	st := waitStatus(t, s, "ns/a", "two syncs done", func(st RepoStatus) bool { return st.Syncs == 2 })
	// The follow-up would start in the same step that finished the second
	// sync, so idle and nothing pending here means there is no third.
	if st.State != StateIdle || st.Pending {
		t.Fatalf("status = %+v, want idle with nothing pending", st)
	}
	calls := rec.of("ns/a")
	want := []SyncRequest{{Trigger: TriggerStartup}, {Trigger: TriggerWebhook, Commit: "commit-49"}}
	if len(calls) == 2 {
		if calls[1].req.HeardAt.IsZero() {
			t.Fatalf("the webhook sync does not say when the push was heard of: %+v", calls[1].req)
		}
		calls[1].req.HeardAt = time.Time{}
	}
	if len(calls) != 2 || !reflect.DeepEqual(calls[0].req, want[0]) || !reflect.DeepEqual(calls[1].req, want[1]) {
		t.Fatalf("syncs = %+v, want %+v", calls, want)
	}
}

// A drift check that comes due while a sync runs is never dropped by
// coalescing: a poll arriving beside it is answered by the check's own
// sync, and an urgent sync that takes its place is followed by the check.
func TestDriftChecksSurviveCoalescing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		beside func(s *System) error
		want   []Trigger
	}{
		{"beside a poll", func(s *System) error { return s.send("ns/a", &tick{trigger: TriggerPoll}) },
			[]Trigger{TriggerStartup, TriggerReconcile}},
		{"beside a webhook", func(s *System) error {
			return s.Webhook(types.NamespacedName{Namespace: "ns", Name: "a"}, "c1")
		}, []Trigger{TriggerStartup, TriggerWebhook, TriggerReconcile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rec, release := syncingAtStartup(t, Config{}, nil)
			driftTickBeside(t, s, tc.beside)
			close(release)
			waitStatus(t, s, "ns/a", "follow-ups done", func(st RepoStatus) bool {
				return st.Syncs == len(tc.want) && st.State == StateIdle && !st.Pending
			})
			if got := triggers(rec.of("ns/a")); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("syncs by trigger = %v, want %v", got, tc.want)
			}
		})
	}
}

// driftTickBeside sends a drift tick and then what beside sends, while
// the startup sync runs: both fold into the sync that follows it.
func driftTickBeside(t *testing.T, s *System, beside func(s *System) error) {
	t.Helper()
	if err := s.send("ns/a", &tick{trigger: TriggerReconcile}); err != nil {
		t.Fatal(err)
	}
	if err := beside(s); err != nil {
		t.Fatal(err)
	}
}

// A drift check owed by a sync that failed (folded into an urgent one, or
// the check's own) still runs when another sync succeeds before the failed
// one's retry.
func TestDriftCheckOfAFailedSyncFollowsTheNextSuccess(t *testing.T) {
	webhook := func(s *System) error { return s.Webhook(types.NamespacedName{Namespace: "ns", Name: "a"}, "c1") }
	for _, tc := range []struct {
		name   string
		fails  Trigger
		beside func(s *System) error // beside the drift tick, during the startup sync
	}{
		{"folded into a webhook", TriggerWebhook, webhook},
		{"the check itself", TriggerReconcile, func(*System) error { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failing := func(req SyncRequest) error {
				if req.Trigger == tc.fails {
					return errors.New("git host unreachable")
				}
				return nil
			}
			s, rec, release := syncingAtStartup(t, Config{Backoff: Backoff{Base: time.Hour, Max: time.Hour}}, failing)
			driftTickBeside(t, s, tc.beside)
			close(release)
			waitStatus(t, s, "ns/a", "the second sync failed", func(st RepoStatus) bool {
				return st.Syncs == 2 && st.State == StateIdle && st.LastError != nil
			})
			if err := s.send("ns/a", &tick{trigger: TriggerPoll}); err != nil {
				t.Fatal(err)
			}
			waitStatus(t, s, "ns/a", "the poll and what follows it", func(st RepoStatus) bool {
				return st.Syncs == 4 && st.State == StateIdle && !st.Pending
			})
			want := []Trigger{TriggerStartup, tc.fails, TriggerPoll, TriggerReconcile}
			if got := triggers(rec.of("ns/a")); !reflect.DeepEqual(got, want) {
				t.Fatalf("syncs by trigger = %v, want %v", got, want)
			}
		})
	}
}

func TestWebhookForUnknownRepository(t *testing.T) {
	s := start(t, Config{Syncer: &recorder{}})
	err := s.Webhook(types.NamespacedName{Namespace: "ns", Name: "missing"}, "abc")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Webhook to an unknown repository = %v, want ErrNotFound", err)
	}
}

func TestSyncNowWaitsForASyncStartedAfterTheRequest(t *testing.T) {
	release := make(chan struct{})
	failFollowUp := errors.New("follow-up failed")
	rec := &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, req SyncRequest) error {
		if req.Trigger == TriggerStartup {
			return await(ctx, release)
		}
		return failFollowUp
	}}
	s := start(t, Config{Syncer: rec, Backoff: Backoff{Base: time.Hour}})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))
	waitStatus(t, s, "ns/a", "startup sync running", func(st RepoStatus) bool { return st.State == StateSyncing })

	got := make(chan error, 1)
	go func() { got <- s.SyncNow(context.Background(), "ns/a") }()
	waitStatus(t, s, "ns/a", "SyncNow queued", func(st RepoStatus) bool { return st.Pending })
	close(release) // the startup sync succeeds; SyncNow must wait for the next one
	if err := recv(t, got, "SyncNow to return"); !errors.Is(err, failFollowUp) {
		t.Fatalf("SyncNow = %v, want the error of the sync started after it", err)
	}
	if tr := triggers(rec.of("ns/a")); !slices.Equal(tr, []Trigger{TriggerStartup, TriggerManual}) {
		t.Fatalf("triggers = %v, want startup then manual", tr)
	}
}

func TestSuspendStopsTimersAndTriggersAndResumeRestartsThem(t *testing.T) {
	const interval = 20 * time.Millisecond
	synced := make(chan SyncRequest, 1000) // the syncs of ns/a
	rec := &recorder{fn: func(_ context.Context, repo *v1alpha1.GitRepository, req SyncRequest) error {
		if repo.Name == "a" {
			synced <- req
		}
		return nil
	}}
	s := start(t, Config{Syncer: rec})
	s.Upsert(newRepo("ns", "a", 1, interval))
	// control polls on the same interval throughout, so its polls mark a
	// window in which a's timers would have fired had they kept running.
	s.Upsert(newRepo("ns", "control", 1, interval))
	waitPolls(t, rec, "ns/a", 3)

	suspended := newRepo("ns", "a", 2, interval)
	suspended.Spec.Suspend = true
	s.Upsert(suspended)
	waitStatus(t, s, "ns/a", "suspended and idle", func(st RepoStatus) bool { return st.State == StateSuspended })
	if err := s.Webhook(types.NamespacedName{Namespace: "ns", Name: "a"}, "abc"); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncNow(context.Background(), "ns/a"); !errors.Is(err, errSuspended) {
		t.Fatalf("SyncNow while suspended = %v, want errSuspended", err)
	}
	drain(synced)
	// Five control polls span at least four jittered periods (each ≤ 1.1
	// interval), so a running timer of a would have fired at least thrice.
	waitPolls(t, rec, "ns/control", countTrigger(rec.of("ns/control"), TriggerPoll)+5)
	select {
	case req := <-synced:
		t.Fatalf("suspended repository synced: %+v", req)
	default:
	}

	s.Upsert(newRepo("ns", "a", 3, interval))
	if req := recv(t, synced, "the spec sync after resume"); req.Trigger != TriggerSpec {
		t.Fatalf("first sync after resume = %+v, want trigger spec", req)
	}
	for range 2 {
		if req := recv(t, synced, "a poll after resume"); req.Trigger != TriggerPoll {
			t.Fatalf("sync after resume = %+v, want polls again", req)
		}
	}
}

// waitPolls waits until the repository key has had at least n poll syncs.
func waitPolls(t *testing.T, rec *recorder, key string, n int) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := countTrigger(rec.of(key), TriggerPoll); got < n {
			return fmt.Errorf("%s: %d poll syncs so far, want %d", key, got, n)
		}
		return nil
	})
}

func TestPanicRestartsOnlyThatActorWithGrowingDelays(t *testing.T) {
	const crashes = 4
	var badSyncs atomic.Int32
	rec := &recorder{fn: func(_ context.Context, repo *v1alpha1.GitRepository, _ SyncRequest) error {
		if repo.Name == "bad" && badSyncs.Add(1) <= crashes {
			panic("boom")
		}
		return nil
	}}
	hooks := &hookRecorder{}
	backoff := Backoff{Base: 40 * time.Millisecond, Max: 10 * time.Second}
	s := start(t, Config{Syncer: rec, Hooks: hooks, Backoff: backoff})
	s.Upsert(newRepo("ns", "bad", 1, time.Hour))
	var good []string // 49 busy repositories beside the broken one
	for i := range 49 {
		name := fmt.Sprintf("good%02d", i)
		good = append(good, "ns/"+name)
		s.Upsert(newRepo("ns", name, 1, 20*time.Millisecond))
	}

	st := waitStatus(t, s, "ns/bad", "bad synced after its crashes", func(st RepoStatus) bool { return st.Syncs == 1 })
	if st.LastError != nil || st.LastTrigger != TriggerStartup {
		t.Fatalf("bad after restarts = %+v, want a clean startup sync", st)
	}
	restarts := hooks.of("ns/bad")
	if len(restarts) != crashes {
		t.Fatalf("bad restarted %d times, want %d", len(restarts), crashes)
	}
	syncs := rec.of("ns/bad")
	if len(syncs) != crashes+1 {
		t.Fatalf("bad synced %d times, want %d crashing syncs and a clean one", len(syncs), crashes+1)
	}
	// Crash i happens during sync i; restart i follows it after attempt i
	// of the backoff schedule.
	var crashed []time.Time
	for _, c := range syncs[:crashes] {
		crashed = append(crashed, c.at)
	}
	checkBackoff(t, "restart", backoff, crashed, restarts)
	for _, key := range good {
		if n := len(hooks.of(key)); n != 0 {
			t.Fatalf("%s restarted %d times, want 0", key, n)
		}
		during := 0
		for _, c := range rec.of(key) {
			if c.at.After(restarts[0]) && c.at.Before(restarts[len(restarts)-1]) {
				during++
			}
		}
		if during < 2 {
			t.Fatalf("%s synced %d times while bad was crashing, want it to keep polling", key, during)
		}
	}
}

func TestFailedSyncIsRetriedWithBackoffNotRestarted(t *testing.T) {
	const failures = 3
	var n atomic.Int32
	rec := &recorder{fn: func(context.Context, *v1alpha1.GitRepository, SyncRequest) error {
		if n.Add(1) <= failures {
			return errors.New("bad credentials")
		}
		return nil
	}}
	hooks := &hookRecorder{}
	backoff := Backoff{Base: 30 * time.Millisecond, Max: 10 * time.Second}
	s := start(t, Config{Syncer: rec, Hooks: hooks, Backoff: backoff})
	s.Upsert(newRepo("ns", "a", 1, time.Hour))

	st := waitStatus(t, s, "ns/a", "succeeded after retries", func(st RepoStatus) bool { return st.Syncs == failures+1 })
	if st.LastError != nil {
		t.Fatalf("last error = %v, want nil after the successful retry", st.LastError)
	}
	calls := rec.of("ns/a")
	if tr := triggers(calls); !slices.Equal(tr, []Trigger{TriggerStartup, TriggerStartup, TriggerStartup, TriggerStartup}) {
		t.Fatalf("triggers = %v, want the failed startup sync retried", tr)
	}
	// Sync i fails at once; sync i+1 is its retry after attempt i of the
	// backoff schedule.
	var at []time.Time
	for _, c := range calls {
		at = append(at, c.at)
	}
	checkBackoff(t, "retry", backoff, at[:failures], at[1:])
	if r := hooks.of("ns/a"); len(r) != 0 {
		t.Fatalf("a failed sync restarted the actor %d times", len(r))
	}
}

// checkBackoff asserts that the wait from[i] → to[i] lasted at least the
// lower jitter bound of attempt i of b's schedule, and that those bounds
// grow, so the waits follow the doubling schedule. Scheduling delays only
// lengthen waits, so the upper bound has generous slack.
func checkBackoff(t *testing.T, what string, b Backoff, from, to []time.Time) {
	t.Helper()
	const slack = 3 * time.Second
	for i := range from {
		low, high := b.Delay(i, 0), b.Delay(i, 1)
		if i > 0 && low <= b.Delay(i-1, 0) {
			t.Fatalf("test schedule %+v: lower bound %v of attempt %d does not grow", b, low, i)
		}
		if wait := to[i].Sub(from[i]); wait < low || wait > high+slack {
			t.Fatalf("%s %d came %v after its failure, want between %v (attempt %d's lower bound) and %v", what, i, wait, low, i, high+slack)
		}
	}
}

func countTrigger(calls []call, tr Trigger) int {
	n := 0
	for _, c := range calls {
		if c.req.Trigger == tr {
			n++
		}
	}
	return n
}

func drain(ch <-chan SyncRequest) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestSyncContextHasTheSpecTimeout(t *testing.T) {
	deadlines := make(chan time.Duration, 1)
	rec := &recorder{fn: func(ctx context.Context, _ *v1alpha1.GitRepository, _ SyncRequest) error {
		d, _ := ctx.Deadline()
		deadlines <- time.Until(d)
		return nil
	}}
	s := start(t, Config{Syncer: rec})
	repo := newRepo("ns", "a", 1, time.Hour)
	repo.Spec.Timeout.Duration = 42 * time.Second
	s.Upsert(repo)
	if d := recv(t, deadlines, "the startup sync"); d <= 40*time.Second || d > 42*time.Second {
		t.Fatalf("sync deadline in %v, want about the spec's 42s timeout", d)
	}
}

func TestIdleActorsHoldNoGoroutines(t *testing.T) {
	const n = 2000
	before := runtime.NumGoroutine()
	rec := &recorder{}
	s := start(t, Config{Syncer: rec})
	for i := range n {
		s.Upsert(newRepo("ns", fmt.Sprintf("r%04d", i), 1, time.Hour))
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := len(rec.all()); got != n {
			return fmt.Errorf("%d of %d startup syncs done", got, n)
		}
		// A handful for the supervisor and mailboxes still draining.
		if extra := runtime.NumGoroutine() - before; extra > 10 {
			return fmt.Errorf("%d goroutines more than before %d idle actors", extra, n)
		}
		return nil
	})
}

// quietRecorder answers polls from memory while quiet is set (QuietPoller),
// handing back a Memory whose LastFetch counts its answers.
type quietRecorder struct {
	recorder
	quiet   atomic.Bool
	answers atomic.Int64
	mu      sync.Mutex
	seen    []time.Time // the LastFetch of each Memory it was asked with
}

func (q *quietRecorder) QuietPoll(_ *v1alpha1.GitRepository, mem Memory) (Memory, bool) {
	q.mu.Lock()
	q.seen = append(q.seen, mem.LastFetch)
	q.mu.Unlock()
	if !q.quiet.Load() {
		return mem, false
	}
	mem.LastFetch = time.Unix(q.answers.Add(1), 0)
	return mem, true
}

// A poll the Syncer answers from memory starts no sync, still counts as
// a finished one, and hands its Memory to the next; a poll it cannot
// answer, and every other trigger, runs the sync.
func TestQuietPollsStartNoSync(t *testing.T) {
	q := &quietRecorder{}
	q.quiet.Store(true)
	s := start(t, Config{Syncer: q})
	s.Upsert(newRepo("ns", "a", 1, 10*time.Millisecond))
	st := waitStatus(t, s, "ns/a", "five quiet polls", func(st RepoStatus) bool { return st.Syncs >= 6 })
	if got := triggers(q.of("ns/a")); !slices.Equal(got, []Trigger{TriggerStartup}) {
		t.Fatalf("syncs run = %v, want the startup sync only", got)
	}
	if st.LastTrigger != TriggerPoll {
		t.Fatalf("last trigger %s, want poll", st.LastTrigger)
	}
	q.mu.Lock()
	seen := slices.Clone(q.seen)
	q.mu.Unlock()
	for i := 1; i < len(seen) && i < 5; i++ { // each poll saw the Memory the one before returned
		if want := time.Unix(int64(i), 0); !seen[i].Equal(want) {
			t.Fatalf("poll %d was asked with LastFetch %v, want %v", i+1, seen[i], want)
		}
	}

	if err := s.Webhook(types.NamespacedName{Namespace: "ns", Name: "a"}, "abc"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := countTrigger(q.of("ns/a"), TriggerWebhook); got != 1 {
			return fmt.Errorf("%d webhook syncs, want 1", got)
		}
		return nil
	})
	q.quiet.Store(false)
	waitPolls(t, &q.recorder, "ns/a", 2)
}

// A poll while a failed sync waits for its retry runs the sync, though
// the Syncer would call it quiet: the sync settles the failure.
func TestAPollAfterAFailureIsNotAnsweredFromMemory(t *testing.T) {
	q := &quietRecorder{}
	q.quiet.Store(true)
	var before atomic.Int64 // polls answered from memory before the first poll's sync
	before.Store(-1)
	q.fn = func(_ context.Context, _ *v1alpha1.GitRepository, req SyncRequest) error {
		if req.Trigger == TriggerStartup {
			return errors.New("git host unreachable")
		}
		before.CompareAndSwap(-1, q.answers.Load())
		return nil
	}
	s := start(t, Config{Syncer: q, Backoff: Backoff{Base: time.Hour, Max: time.Hour}})
	s.Upsert(newRepo("ns", "a", 1, 10*time.Millisecond))
	waitPolls(t, &q.recorder, "ns/a", 1)
	if n := before.Load(); n != 0 {
		t.Fatalf("%d polls answered from memory while a retry was pending", n)
	}
	// The poll's sync succeeded: the next polls are answered from memory.
	testenv.Eventually(t, 5*time.Second, func() error {
		if q.answers.Load() == 0 {
			return errors.New("no poll answered from memory after the failure was settled")
		}
		return nil
	})
}
