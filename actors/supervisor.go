package actors

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// Messages to the supervisor.
type (
	upsert struct{ repo *v1alpha1.GitRepository }
	remove struct{ key string }
	// cleaned says that OnRemove has returned for a removed repository.
	cleaned struct{ key string }
	// restart ends a crashed child's backoff delay.
	restart struct {
		key string
		pid *actor.PID
		sup actor.Supervisor
	}
	// crashSupervisor makes the supervisor panic when the System's
	// crashOnRequest is set: tests use it to prove the guardian.
	crashSupervisor struct{}
)

// child is the supervisor's record of one repository actor.
type child struct {
	pid *actor.PID
	// repo is the latest object, read by the producer when the actor
	// (re)starts on its own goroutine.
	repo         atomic.Pointer[v1alpha1.GitRepository]
	restarts     backoffState
	restartTimer *time.Timer
	crashed      bool // waiting out its backoff, mailbox suspended
	removing     bool
	recreate     *v1alpha1.GitRepository // upserted again while the old actor was stopping
}

// supervisor is the parent of every repository actor. It implements
// actor.SupervisorStrategy itself so that it keeps each child's backoff
// next to the child: a crash is handled one-for-one, on its own mailbox.
type supervisor struct {
	sys      *System
	self     *actor.PID
	children map[string]*child
	stopping bool
}

func (s *supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.self = ctx.Self()
	case *upsert:
		s.upsert(ctx, m.repo)
	case *remove:
		s.remove(ctx, m.key)
	case *restart:
		s.restart(m)
	case *cleaned:
		s.cleaned(ctx, m.key)
	case *crashSupervisor:
		if s.sys.crashOnRequest {
			panic("crash requested by a test")
		}
	case *actor.Terminated:
		s.terminated(ctx, m.Who)
	case *actor.Stopping:
		s.stopping = true
		for _, c := range s.children {
			stopTimer(c.restartTimer)
		}
	}
}

func (s *supervisor) upsert(ctx actor.Context, repo *v1alpha1.GitRepository) {
	if s.stopping {
		return
	}
	c := s.children[repo.Key()]
	switch {
	case c == nil:
		s.spawn(ctx, repo)
	case c.removing:
		c.recreate = repo
	default:
		old := c.repo.Swap(repo)
		ctx.Send(c.pid, &update{repo: repo})
		if becameReady(old, repo) {
			s.wakeDependents(ctx, repo.Key())
		}
	}
}

// becameReady reports a GitRepository that turned Ready, or applied a new
// commit while Ready: its dependents may go on.
func becameReady(old, repo *v1alpha1.GitRepository) bool {
	ready, _ := v1alpha1.DependencyReady(repo)
	if !ready {
		return false
	}
	wasReady, _ := v1alpha1.DependencyReady(old)
	return !wasReady || old.Status.LastSyncedCommit != repo.Status.LastSyncedCommit
}

// wakeDependents tells the repositories whose spec.dependsOn names key;
// those waiting for it sync.
func (s *supervisor) wakeDependents(ctx actor.Context, key string) {
	for _, c := range s.children {
		if !c.removing && !c.crashed && c.repo.Load().DependsOn(key) {
			ctx.Send(c.pid, &dependencyReady{})
		}
	}
}

func (s *supervisor) spawn(ctx actor.Context, repo *v1alpha1.GitRepository) {
	key := repo.Key()
	c := &child{}
	c.repo.Store(repo)
	props := actor.PropsFromProducer(func() actor.Actor { return &repoActor{sys: s.sys, key: key, repo: c.repo.Load()} })
	pid, err := ctx.SpawnNamed(props, key)
	if err != nil {
		s.sys.log.Error("spawn repository actor", zap.String("repository", key), zap.Error(err))
		return
	}
	c.pid = pid
	s.children[key] = c
	s.sys.register(key, pid)
	s.sys.cfg.Hooks.ActorStarted(key)
}

func (s *supervisor) remove(ctx actor.Context, key string) {
	c := s.children[key]
	if c == nil || c.removing {
		return
	}
	c.removing, c.recreate = true, nil
	if c.crashed {
		// A crashed actor's mailbox is suspended: only a system stop reaches it.
		stopTimer(c.restartTimer)
		ctx.Stop(c.pid)
		return
	}
	ctx.Send(c.pid, &stop{})
}

// HandleFailure is called on the supervisor's mailbox when a repository
// actor panics. It restarts that actor alone after its next backoff delay.
func (s *supervisor) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, who *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	key := s.keyOf(who)
	c := s.children[key]
	if c == nil || !c.pid.Equal(who) || c.removing || s.stopping {
		sup.StopChildren(who)
		return
	}
	delay := c.restarts.next(s.sys.cfg.Backoff, time.Now(), rand.Float64())
	s.sys.log.Error("repository actor crashed; restarting it",
		zap.String("repository", key), zap.Any("reason", reason), zap.Duration("delay", delay))
	c.crashed = true
	root, self := s.sys.root, s.self
	c.restartTimer = time.AfterFunc(delay, func() { root.Send(self, &restart{key: key, pid: who, sup: sup}) })
}

func (s *supervisor) restart(m *restart) {
	c := s.children[m.key]
	if c == nil || !c.pid.Equal(m.pid) || c.removing || s.stopping {
		return
	}
	c.crashed = false
	s.sys.cfg.Hooks.ActorRestarted(m.key)
	m.sup.RestartChildren(m.pid)
}

func (s *supervisor) terminated(ctx actor.Context, who *actor.PID) {
	key := s.keyOf(who)
	c := s.children[key]
	if c == nil || !c.pid.Equal(who) {
		return
	}
	stopTimer(c.restartTimer)
	s.sys.register(key, nil)
	s.sys.cfg.Hooks.ActorStopped(key)
	if !c.removing {
		delete(s.children, key)
		return
	}
	// OnRemove (evict the cache, delete the checkout) runs off this mailbox;
	// the child's record stays until it returns, so that an upsert in the
	// meantime waits as a recreate instead of racing the cleanup.
	root, self := s.sys.root, s.self
	go func() {
		s.sys.cfg.OnRemove(key)
		root.Send(self, &cleaned{key: key})
	}()
}

func (s *supervisor) cleaned(ctx actor.Context, key string) {
	c := s.children[key]
	if c == nil || !c.removing {
		return
	}
	delete(s.children, key)
	if c.recreate != nil && !s.stopping {
		s.spawn(ctx, c.recreate)
	}
}

// keyOf turns a child's PID ("<supervisor>/<namespace>/<name>") into its key.
func (s *supervisor) keyOf(pid *actor.PID) string {
	return strings.TrimPrefix(pid.Id, s.self.Id+"/")
}

// fatalGuardian supervises the actors spawned at the root: the supervisor,
// the watcher and the cache actor. None of them can be restarted in place
// without losing what only they hold (the supervisor's children, the
// watcher's informer registration, the cache's entries) and the informer
// never replays its objects (resync 0), so a panic in one is fatal: the
// System's Fatal callback runs, once.
type fatalGuardian struct {
	sys  *System
	once sync.Once
}

func (g *fatalGuardian) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, who *actor.PID, _ *actor.RestartStatistics, reason, message any) {
	err := fmt.Errorf("actor %s panicked while handling %T: %v; it holds state no restart recovers, so ALUMIINI exits for Kubernetes to restart it", who.Id, message, reason)
	g.once.Do(func() { g.sys.cfg.Fatal(err) })
	// Reached only when Fatal returns (tests): stop the broken actor.
	sup.StopChildren(who)
}

// fatalCleanup bounds how long exitOnFatal waits for cancelled syncs.
const fatalCleanup = 5 * time.Second

// exitOnFatal is the default Fatal: log, cancel running syncs and give them
// fatalCleanup to return (their applies stop at an object boundary; the
// inventory in the status keeps pruning right), then exit non-zero.
func (s *System) exitOnFatal(err error) {
	s.log.Error("the actor tree cannot recover; exiting", zap.Error(err))
	s.cancelSyncs()
	select {
	case <-s.syncsDone():
	case <-time.After(fatalCleanup):
		s.log.Error("exiting with syncs still running", zap.Duration("waited", fatalCleanup))
	}
	_ = s.log.Sync()
	os.Exit(1)
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
