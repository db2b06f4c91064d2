// Package actors runs ALUMIINI's actor tree (design.md §2) on protoactor-go:
// a supervisor with one actor per GitRepository, restarted one-for-one with
// exponential backoff, and a watcher actor fed by an informer. A repository
// actor owns its timers and triggers and runs at most one sync at a time, off
// its mailbox, through the Syncer it is given. docs/actors.md explains the
// choices.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// Trigger says why a sync runs.
type Trigger string

const (
	TriggerWebhook   Trigger = "webhook"
	TriggerManual    Trigger = "manual" // requestedAt annotation or SyncNow
	TriggerSpec      Trigger = "spec"   // the spec changed (new generation, or resumed)
	TriggerPoll      Trigger = "poll"
	TriggerReconcile Trigger = "reconcile"
	TriggerStartup   Trigger = "startup"
	// TriggerDependency: a GitRepository this one waits for (spec.dependsOn)
	// became Ready.
	TriggerDependency Trigger = "dependency"
)

// Urgent reports a trigger that someone waits for (a push, a person, a
// spec change): its sync goes ahead of timer work wherever work queues.
func (t Trigger) Urgent() bool {
	switch t {
	case TriggerWebhook, TriggerManual, TriggerSpec:
		return true
	}
	return false
}

// priority orders triggers: a follow-up sync carries the most urgent trigger
// that arrived while the actor was busy. A spec change ranks below a manual
// request and above the timers. A drift check ranks above a poll and a
// dependency's wake-up: its sync fetches and applies a new commit as theirs
// do, so it answers them too, where a poll taking its place would drop the
// check for a whole reconcileInterval.
func (t Trigger) priority() int {
	switch t {
	case TriggerWebhook:
		return 5
	case TriggerManual:
		return 4
	case TriggerSpec:
		return 3
	case TriggerReconcile:
		return 2
	case TriggerDependency, TriggerPoll:
		return 1
	}
	return 0
}

// SyncRequest is what one sync is asked to do.
type SyncRequest struct {
	Trigger Trigger
	Commit  string // the pushed commit, for webhooks
	// HeardAt is when the webhook of Commit arrived: git hosts send it
	// once the push is in, so any ref listing begun since shows Commit.
	HeardAt time.Time
	// Retry marks a request tried again after a failure: its HeardAt is
	// a backoff ago, not a wait for the actor.
	Retry       bool
	RequestedAt string // the requestedAt annotation handled, for manual syncs
	// Drift marks an urgent request that a drift check was merged into:
	// once its sync (or a later one, should it fail) succeeds, the check
	// runs next, as the drift timer was already set for the interval
	// after it. While urgent syncs keep following one another, the check
	// goes on waiting behind them.
	Drift bool
	// Slot, set by the repository actor for the sync it starts, waits for
	// one of the --max-concurrent-syncs slots and returns the context for
	// the rest of the sync: spec.timeout, its clock stopped while waiting.
	// A Syncer calls it once it has something to write to the cluster, so
	// that fetches (a git host that does not answer) and quiet polls hold
	// no slot; the slot is given back when Sync returns.
	Slot func() (context.Context, error)
}

// merge coalesces a pending request with a new one: the more urgent trigger,
// and the latest commit and requestedAt either carries.
func (r SyncRequest) merge(o SyncRequest) SyncRequest {
	drift := r.checksDrift() || o.checksDrift()
	if o.Trigger.priority() >= r.Trigger.priority() {
		r.Trigger = o.Trigger
	}
	if o.Commit != "" {
		r.Commit = o.Commit
	}
	if o.HeardAt.After(r.HeardAt) {
		r.HeardAt = o.HeardAt
	}
	r.Retry = r.Retry && o.Retry
	r.Drift = drift && r.Trigger != TriggerReconcile
	if o.RequestedAt != "" {
		r.RequestedAt = o.RequestedAt
	}
	return r
}

// checksDrift reports whether r's sync owes a drift check: it is one, or
// one was folded into it.
func (r SyncRequest) checksDrift() bool {
	return r.Drift || r.Trigger == TriggerReconcile
}

// Syncer runs one sync of one repository. It gets the Memory the previous
// sync handed back and returns the Memory for the next one (also when it
// fails). An error is a failed sync, retried on the backoff schedule unless
// it wraps ErrStalled; a panic crashes the repository's actor.
type Syncer interface {
	Sync(ctx context.Context, repo *v1alpha1.GitRepository, req SyncRequest, mem Memory) (Memory, error)
}

// QuietPoller is a Syncer that can tell, from memory alone and without
// waiting, that a poll would find nothing to do. The repository actor asks
// it before starting a poll's sync: at thousands of idle repositories
// polling every minute, the goroutine, the copy of the repository and the
// sync itself were most of the controller's idle CPU. quiet false means
// "run the sync"; when true, the returned Memory replaces the actor's.
type QuietPoller interface {
	QuietPoll(repo *v1alpha1.GitRepository, mem Memory) (next Memory, quiet bool)
}

// Memory is what one sync of a repository hands to the next. The repository
// actor owns it: it travels to the sync with the request and comes back in
// the sync's report, so no other place keeps a copy in step. A restarted
// actor starts with an empty Memory (the sync then reads what it needs
// from the API server and the cache actor).
type Memory struct {
	// Status is the status this controller last wrote (or read); nil means
	// unknown: read it from the API server before trusting it. Treat it as
	// read-only: a sync replaces it, never changes it in place.
	Status *v1alpha1.GitRepositoryStatus
	// Commit, Generation and Hashes say what the cluster holds: the content
	// hash of every object applied from Commit under spec Generation.
	Commit     string
	Generation int64
	Hashes     map[string]string
	// Versions are the resourceVersions the objects had after ALUMIINI's
	// last write or drift check: a drift check dry-runs only the objects
	// that moved since (another writer touched them).
	Versions map[string]string
	// RunID is the CDEvents pipelineRun id of an apply that started and has
	// not finished yet.
	RunID string
	// Inputs are the files outside spec.path that the build of Commit read
	// (kustomize bases elsewhere, link targets), repository-relative; nil
	// means unknown. A later commit that changes none of them nor anything
	// under spec.path is only recorded.
	Inputs []string
	// LastFetch is when the last fetch began: a poll may reuse a ref
	// listing of the same remote that another repository started since.
	LastFetch time.Time
}

// ErrStalled marks a failed sync that retrying cannot fix (manifests that do
// not parse at this commit): no retry is scheduled, and the next sync comes
// from the poll timer, a spec change, a webhook or a manual request.
var ErrStalled = errors.New("stalled")

// ErrWaiting marks a sync that waits for the GitRepositories of
// spec.dependsOn to be Ready. It is no failure: no backoff grows. The
// repository syncs again when one of them turns Ready (System.Upsert of
// that one wakes it), or after DependencyRecheck at the latest.
var ErrWaiting = errors.New("waiting for dependencies")

// DependencyRecheck bounds how long a repository waits for its
// dependencies without being woken (for one outside the watched
// namespaces, whose status changes the controller does not see).
const DependencyRecheck = 30 * time.Second

// ErrAPIUnreachable marks a failed sync that could not reach the
// Kubernetes API server. Besides the backoff retry, such repositories are
// woken as soon as the API server answers again (System.WatchAPI).
var ErrAPIUnreachable = errors.New("kubernetes API server unreachable")

// Hooks observes the actor tree, for metrics. Calls come from many
// goroutines and must not block.
type Hooks interface {
	ActorStarted(key string)
	ActorRestarted(key string)
	ActorStopped(key string)
}

// NopHooks ignores everything; embed it to observe only some events.
type NopHooks struct{}

func (NopHooks) ActorStarted(string)   {}
func (NopHooks) ActorRestarted(string) {}
func (NopHooks) ActorStopped(string)   {}

// Config configures a System. Syncer is required.
type Config struct {
	Syncer  Syncer
	Logger  *zap.Logger // nil logs nothing
	Backoff Backoff     // restart and retry schedule; zero value is 1s..60s
	// OnRemove is called, on a goroutine of its own (never blocking the
	// supervisor's mailbox), once a deleted repository's actor has stopped
	// and its last sync has returned: the place to evict caches and remove
	// checkouts. A repository created again under the same key starts only
	// after OnRemove has returned.
	OnRemove func(key string)
	Hooks    Hooks // nil observes nothing
	// MaxConcurrentSyncs bounds the syncs running at once across all
	// repositories (0: unbounded). Ten thousand actors start together;
	// their first syncs queue here instead of all hitting git and the API
	// server at once.
	MaxConcurrentSyncs int
	// Fatal is called once when a singleton of the tree (the supervisor,
	// the watcher, or an actor spawned through Root such as the cache
	// actor) panics. Restarting one of them in place loses state nothing
	// rebuilds (the supervisor's children), so the process should exit
	// non-zero and let Kubernetes restart it: the startup sync converges
	// again. nil logs the error, cancels running syncs, waits for them at
	// most fatalCleanup, and exits with status 1.
	Fatal func(error)
	// Owns filters the repositories this System runs, in cluster mode
	// (actors/cluster.Node.Owns): a repository it does not own is treated
	// as removed. nil owns every repository. Call Reconsider when the
	// answers may have changed.
	Owns func(key string) bool
}

// State is what a repository actor is doing.
type State string

const (
	StateIdle      State = "idle"
	StateSyncing   State = "syncing"
	StateSuspended State = "suspended"
)

// RepoStatus is a repository actor's view of itself. Counters restart with
// the actor.
type RepoStatus struct {
	Key             string
	State           State
	Pending         bool   // a follow-up sync is queued
	Generation      int64  // spec generation the actor holds
	ResourceVersion string // of the object the actor holds
	LastTrigger     Trigger
	LastError       error     // of the last finished sync
	Syncs           int       // finished syncs
	NextPoll        time.Time // when the poll timer fires; zero when not armed
	NextDrift       time.Time // when the drift-check timer fires; zero when not armed
}

// ErrNotFound means no actor runs for the repository.
var ErrNotFound = errors.New("no actor for this GitRepository")

// System is the running actor tree.
type System struct {
	cfg         Config
	log         *zap.Logger
	actors      *actor.ActorSystem
	root        *actor.RootContext
	supervisor  *actor.PID
	syncCtx     context.Context // parent of every sync's context
	cancelSyncs context.CancelFunc
	syncs       sync.WaitGroup
	slots       *scheduler    // the --max-concurrent-syncs slots, in two lanes
	stopping    chan struct{} // closed when Shutdown starts: queued syncs give up
	apiWaiting  atomic.Int64  // repositories whose last sync could not reach the API server

	mu     sync.RWMutex
	pids   map[string]*actor.PID // live repository actors, kept by the supervisor
	watch  *watch
	closed bool

	// crashOnRequest lets tests make the supervisor panic (crashSupervisor).
	crashOnRequest bool
}

// NewSystem starts the actor system and the supervisor.
func NewSystem(cfg Config) *System {
	if cfg.Syncer == nil {
		panic("actors: Config.Syncer is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Hooks == nil {
		cfg.Hooks = NopHooks{}
	}
	if cfg.OnRemove == nil {
		cfg.OnRemove = func(string) {}
	}
	cfg.Backoff = cfg.Backoff.withDefaults()
	s := &System{cfg: cfg, log: cfg.Logger, pids: map[string]*actor.PID{}}
	s.syncCtx, s.cancelSyncs = context.WithCancel(context.Background())
	s.stopping = make(chan struct{})
	s.slots = newScheduler(cfg.MaxConcurrentSyncs, maxUrgentRun, s.stopping)
	protoLog := slog.New(newZapHandler(cfg.Logger.Named("protoactor")))
	s.actors = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return protoLog }))
	if cfg.Fatal == nil {
		s.cfg.Fatal = s.exitOnFatal
	}
	// Every actor spawned at the root is a singleton: its guardian turns a
	// panic into a call of Fatal instead of protoactor's default restart.
	s.root = s.actors.Root.Copy().WithGuardian(&fatalGuardian{sys: s})
	props := actor.PropsFromProducer(func() actor.Actor { return &supervisor{sys: s, children: map[string]*child{}} })
	pid, err := s.root.SpawnNamed(props, "supervisor")
	if err != nil {
		panic(fmt.Sprintf("actors: spawn the supervisor in a new actor system: %v", err))
	}
	s.supervisor = pid
	return s
}

// Root is the actor system's root context, for spawning siblings such as
// the cache actor.
func (s *System) Root() *actor.RootContext { return s.root }

// Upsert spawns the repository's actor or hands it the new object. The
// object must not be modified afterwards.
func (s *System) Upsert(repo *v1alpha1.GitRepository) {
	s.root.Send(s.supervisor, &upsert{repo: repo})
}

// Remove stops the repository's actor for good, after its running sync.
func (s *System) Remove(key string) { s.root.Send(s.supervisor, &remove{key: key}) }

// Webhook queues a webhook sync of the given commit. It never blocks.
func (s *System) Webhook(key types.NamespacedName, commit string) error {
	pid := s.lookup(key.String())
	if pid == nil {
		return fmt.Errorf("webhook for GitRepository %s: %w", key, ErrNotFound)
	}
	s.root.Send(pid, &webhook{commit: commit, heardAt: time.Now()})
	return nil
}

// SyncNow asks for a sync and waits for one that started after the request
// to finish, returning its error.
func (s *System) SyncNow(ctx context.Context, key string) error {
	reply := make(chan error, 1)
	if err := s.send(key, &syncNow{reply: reply}); err != nil {
		return fmt.Errorf("sync %s now: %w", key, err)
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("sync %s now: %w", key, ctx.Err())
	}
}

// Status asks the repository's actor what it is doing; it answers while a
// sync runs.
func (s *System) Status(ctx context.Context, key string) (RepoStatus, error) {
	reply := make(chan RepoStatus, 1)
	if err := s.send(key, &getStatus{reply: reply}); err != nil {
		return RepoStatus{}, fmt.Errorf("status of %s: %w", key, err)
	}
	select {
	case st := <-reply:
		return st, nil
	case <-ctx.Done():
		return RepoStatus{}, fmt.Errorf("status of %s: %w", key, ctx.Err())
	}
}

// Keys lists the repositories that have a live actor, sorted.
func (s *System) Keys() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.pids))
	for k := range s.pids {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// countSync counts a sync about to start, unless Shutdown began. The
// count is taken under the lock Shutdown sets closed with, so no sync is
// added while Shutdown waits for them (the supervisor may be gone after a
// panic while its children still run).
func (s *System) countSync() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.syncs.Add(1)
	return true
}

// syncsDone is closed once every counted sync has ended.
func (s *System) syncsDone() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		s.syncs.Wait()
		close(done)
	}()
	return done
}

// Shutdown stops the watcher and every actor, waits for running syncs
// until ctx is done, then cancels those still running.
func (s *System) Shutdown(ctx context.Context) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	w := s.watch
	s.mu.Unlock()
	close(s.stopping)

	if w != nil {
		w.stop(s.root)
	}
	if err := s.root.StopFuture(s.supervisor).Wait(); err != nil {
		s.log.Error("stop repository actors", zap.Error(err))
	}
	done := s.syncsDone()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("shutdown: cancelling syncs still running", zap.Error(ctx.Err()))
	}
	s.cancelSyncs()
	// Cancelled syncs return promptly; wait for them so that no sync of
	// this system overlaps with one of a new leader.
	select {
	case <-done:
	case <-time.After(syncStopTimeout):
		s.log.Error("shutdown: syncs still running after cancellation", zap.Duration("waited", syncStopTimeout))
	}
	s.actors.Shutdown()
}

// syncStopTimeout bounds the wait for cancelled syncs to return (their
// final status write is bounded by 10 s).
const syncStopTimeout = 12 * time.Second

func (s *System) lookup(key string) *actor.PID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pids[key]
}

func (s *System) send(key string, msg any) error {
	pid := s.lookup(key)
	if pid == nil {
		return ErrNotFound
	}
	s.root.Send(pid, msg)
	return nil
}

func (s *System) register(key string, pid *actor.PID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pid == nil {
		delete(s.pids, key)
	} else {
		s.pids[key] = pid
	}
}

// errStopping is the error of a sync that never started because the system
// was shutting down.
var errStopping = errors.New("not started: shutting down")

// WatchAPI probes the API server every period while some repository's last
// sync failed because the API server was unreachable, until ctx ends or
// Shutdown starts. When a probe succeeds after that, it wakes those
// repositories, spread over spread so that they do not all call at once:
// recovery after an outage then takes seconds, not the retry backoff that
// the outage built up. probe is for example a GET of /readyz.
func (s *System) WatchAPI(ctx context.Context, probe func(context.Context) error, period, spread time.Duration) {
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		woken := false // since the API server last failed a probe
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.stopping:
				return
			case <-t.C:
			}
			if s.apiWaiting.Load() == 0 {
				woken = false
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, period)
			err := probe(pctx)
			cancel()
			switch {
			case err != nil:
				woken = false
			case !woken:
				woken = true
				s.wakeAPIWaiters(spread)
			}
		}
	}()
}

// wakeAPIWaiters tells every repository actor that the API server answers
// again; only those whose last sync failed on it retry at once.
func (s *System) wakeAPIWaiters(spread time.Duration) {
	s.mu.RLock()
	pids := make([]*actor.PID, 0, len(s.pids))
	for _, pid := range s.pids {
		pids = append(pids, pid)
	}
	s.mu.RUnlock()
	s.log.Info("the API server answers again: waking repositories that failed to reach it",
		zap.Int64("waiting", s.apiWaiting.Load()))
	for i, pid := range pids {
		delay := spread * time.Duration(i) / time.Duration(len(pids))
		time.AfterFunc(delay, func() { s.root.Send(pid, &apiBack{}) })
	}
}
