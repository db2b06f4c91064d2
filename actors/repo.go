package actors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// Messages to a repository actor.
type (
	update  struct{ repo *v1alpha1.GitRepository }
	webhook struct {
		commit  string
		heardAt time.Time
	}
	syncNow   struct{ reply chan<- error }
	getStatus struct{ reply chan<- RepoStatus }
	stop      struct{} // the repository was deleted
	tick      struct{ trigger Trigger }
	retryTick struct{}
	// dependencyReady says a GitRepository of spec.dependsOn turned Ready.
	dependencyReady struct{}
	// apiBack says the API server answers again (System.WatchAPI).
	apiBack struct{}
	// syncDone reports the end of a sync from its goroutine.
	syncDone struct {
		job       *job
		mem       Memory
		err       error
		recovered any // the Syncer panicked with this
		stack     []byte
	}
)

// Timer ticks and sync reports may outlive their actor; losing them then is
// expected, not worth a dead-letter log line.
func (*tick) IgnoreDeadLetterLogging()      {}
func (*retryTick) IgnoreDeadLetterLogging() {}
func (*syncDone) IgnoreDeadLetterLogging()  {}
func (*apiBack) IgnoreDeadLetterLogging()   {}
func (*cleaned) IgnoreDeadLetterLogging()   {}

var (
	errSuspended = errors.New("repository is suspended")
	errStopped   = errors.New("repository actor stopped")
)

// job is the sync in flight.
type job struct {
	req     SyncRequest
	ticket  *ticket // its place in the queue for a sync slot
	cancel  context.CancelFunc
	waiters []chan<- error // SyncNow callers answered when it ends
}

// repoActor keeps one GitRepository in sync. All fields are touched only on
// its mailbox; the sync itself runs in a goroutine that reports back.
type repoActor struct {
	sys  *System
	key  string
	self *actor.PID
	repo *v1alpha1.GitRepository

	running         *job
	memory          Memory         // handed to each sync, taken back from its report
	apiWait         bool           // the last sync failed on an unreachable API server
	next            *SyncRequest   // coalesced follow-up
	waiters         []chan<- error // SyncNow callers waiting for the next sync to start
	failed          *SyncRequest   // retried when retryTimer fires
	retries         backoffState
	lastRequestedAt string
	removing        bool
	waitingDeps     bool // the last sync waits for spec.dependsOn

	poll, drift, retryTimer *time.Timer
	pollDue, driftDue       time.Time // reported by status: timers do not expose their deadline
	stats                   RepoStatus
}

func (a *repoActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *update:
		a.update(ctx, m.repo)
	case *webhook:
		a.trigger(ctx, SyncRequest{Trigger: TriggerWebhook, Commit: m.commit, HeardAt: m.heardAt})
	case *tick:
		a.tick(ctx, m.trigger)
	case *retryTick:
		if a.failed != nil {
			a.trigger(ctx, *a.failed)
		}
	case *dependencyReady:
		// A running sync may have read the dependency just before it turned
		// Ready: follow it up (cheap if it did apply).
		if a.waitingDeps || a.running != nil {
			a.stopRetry()
			a.trigger(ctx, SyncRequest{Trigger: TriggerDependency})
		}
	case *apiBack:
		if a.apiWait && a.failed != nil && a.running == nil {
			stopTimer(a.retryTimer)
			a.trigger(ctx, *a.failed)
		}
	case *syncNow:
		a.syncNow(ctx, m.reply)
	case *getStatus:
		m.reply <- a.status()
	case *syncDone:
		a.finished(ctx, m)
	case *stop:
		a.remove(ctx)
	case *actor.Restarting:
		// The replacement will sync at once: do not let this one overlap.
		if a.running != nil {
			a.running.cancel()
		}
		a.halt(errStopped)
		a.setAPIWait(false)
	case *actor.Stopping:
		// Shutdown lets a running sync finish; System.Shutdown waits for it.
		a.halt(errStopped)
		a.setAPIWait(false)
	}
}

func (a *repoActor) start(ctx actor.Context) {
	a.self = ctx.Self()
	req := SyncRequest{Trigger: TriggerStartup}
	if at, ok := a.newRequest(a.repo); ok {
		req = SyncRequest{Trigger: TriggerManual, RequestedAt: at}
	}
	if a.repo.Spec.Suspend {
		return
	}
	a.armTimers()
	a.trigger(ctx, req)
}

// update takes a new version of the object. A spec change (new generation)
// or a new requestedAt asks for a sync; a status-only change does not.
func (a *repoActor) update(ctx actor.Context, repo *v1alpha1.GitRepository) {
	old := a.repo
	a.repo = repo
	if a.removing {
		return
	}
	at, requested := a.newRequest(repo)
	switch {
	case repo.Spec.Suspend:
		if !old.Spec.Suspend {
			a.suspend()
		}
		return
	case old.Spec.Suspend || repo.Generation != old.Generation:
		a.armTimers() // intervals may have changed
		if !requested {
			a.trigger(ctx, SyncRequest{Trigger: TriggerSpec})
		}
	}
	if requested {
		a.trigger(ctx, SyncRequest{Trigger: TriggerManual, RequestedAt: at})
	}
}

// newRequest reports a requestedAt annotation not yet handled nor seen.
func (a *repoActor) newRequest(repo *v1alpha1.GitRepository) (string, bool) {
	at := repo.Annotations[v1alpha1.AnnotationRequestedAt]
	if at == "" || at == repo.Status.LastHandledRequestedAt || at == a.lastRequestedAt {
		return "", false
	}
	a.lastRequestedAt = at
	return at, true
}

func (a *repoActor) suspend() {
	a.stopTimers()
	a.next, a.failed = nil, nil
	a.answer(a.waiters, errSuspended)
	a.waiters = nil
}

func (a *repoActor) tick(ctx actor.Context, trigger Trigger) {
	if a.repo.Spec.Suspend || a.removing {
		return // a tick already in flight when the timers stopped
	}
	if trigger == TriggerPoll {
		a.armPoll(jitter(a.repo.Spec.PollInterval()))
		if a.quietPoll() {
			return
		}
	} else {
		a.armDrift(jitter(a.repo.Spec.DriftInterval()))
	}
	a.trigger(ctx, SyncRequest{Trigger: trigger})
}

// quietPoll lets the Syncer answer a poll from memory (QuietPoller) when
// nothing else is under way: no sync runs or waits to follow, and no
// retry, dependency or API server wait would be settled by a sync.
func (a *repoActor) quietPoll() bool {
	q, ok := a.sys.cfg.Syncer.(QuietPoller)
	if !ok || a.running != nil || a.next != nil || a.failed != nil || a.waitingDeps || a.apiWait {
		return false
	}
	mem, quiet := q.QuietPoll(a.repo, a.memory)
	if quiet {
		a.memory = mem
		a.stats.Syncs++
		a.stats.LastTrigger, a.stats.LastError = TriggerPoll, nil
	}
	return quiet
}

func (a *repoActor) syncNow(ctx actor.Context, reply chan<- error) {
	switch {
	case a.removing:
		reply <- errStopped
	case a.repo.Spec.Suspend:
		reply <- errSuspended
	default:
		a.waiters = append(a.waiters, reply)
		a.trigger(ctx, SyncRequest{Trigger: TriggerManual})
	}
}

// trigger starts a sync, or folds the request into the follow-up of the
// running one.
func (a *repoActor) trigger(ctx actor.Context, req SyncRequest) {
	if a.repo.Spec.Suspend || a.removing {
		return
	}
	if a.running == nil {
		a.launch(ctx, req)
		return
	}
	if laneOf(req.Trigger) == laneUrgent {
		// A timer sync still queued for a slot now carries someone's wait.
		a.sys.slots.promote(a.running.ticket)
	}
	a.follow(req)
}

// follow sets req as the next sync, merged with any already set: it
// starts when the running sync ends, or at the end of finished.
func (a *repoActor) follow(req SyncRequest) {
	if a.next != nil {
		req = a.next.merge(req)
	}
	a.next = &req
}

// launch starts a sync in its own goroutine, handing it the Memory.
func (a *repoActor) launch(ctx actor.Context, req SyncRequest) {
	if !a.sys.countSync() {
		return // Shutdown began: no new sync
	}
	parent, cancel := context.WithCancel(a.sys.syncCtx)
	// The ticket asks for a slot only when the sync calls req.Slot; held
	// here from the start so that a later trigger can promote it.
	j := &job{req: req, ticket: newTicket(laneOf(req.Trigger)), cancel: cancel, waiters: a.waiters}
	a.running, a.waiters = j, nil
	a.stats.LastTrigger = req.Trigger

	repo, mem, syncer, root, self := a.repo.DeepCopy(), a.memory, a.sys.cfg.Syncer, ctx.ActorSystem().Root, ctx.Self()
	go func() {
		defer a.sys.syncs.Done()
		defer cancel()
		done := &syncDone{job: j, mem: mem}
		defer func() {
			if r := recover(); r != nil {
				done.recovered, done.stack = r, debug.Stack()
			}
			root.Send(self, done)
		}()
		slot := &slotUse{slots: a.sys.slots, ticket: j.ticket, parent: parent, timeout: repo.Spec.SyncTimeout(), start: time.Now()}
		defer slot.giveBack()
		syncCtx, cancelTimeout := context.WithTimeout(parent, slot.timeout)
		defer cancelTimeout()
		req.Slot = slot.take
		done.mem, done.err = syncer.Sync(syncCtx, repo, req, mem)
	}()
}

// slotUse is one sync's use of a --max-concurrent-syncs slot.
type slotUse struct {
	slots   *scheduler
	ticket  *ticket
	parent  context.Context
	timeout time.Duration
	start   time.Time

	ctx    context.Context // after take: the sync's context from then on
	cancel context.CancelFunc
	err    error
}

// take waits for the slot (once, whatever the number of calls) and
// returns a context with what is left of the timeout: the wait does not
// count, as the timeout bounds the work, not the queue.
func (u *slotUse) take() (context.Context, error) {
	if u.ctx != nil || u.err != nil {
		return u.ctx, u.err
	}
	used := time.Since(u.start)
	u.slots.ask(u.ticket)
	if u.err = u.slots.wait(u.parent, u.ticket); u.err != nil {
		return nil, u.err
	}
	u.ctx, u.cancel = context.WithTimeout(u.parent, u.timeout-used)
	return u.ctx, nil
}

func (u *slotUse) giveBack() {
	if u.ctx != nil {
		u.cancel()
		u.slots.release()
	}
}

func (a *repoActor) finished(ctx actor.Context, d *syncDone) {
	if d.job != a.running {
		return // from the incarnation before a restart
	}
	a.running = nil
	req := d.job.req
	if d.recovered != nil {
		err := fmt.Errorf("sync of %s panicked: %v", a.key, d.recovered)
		a.answer(d.job.waiters, err)
		a.halt(err)
		a.sys.log.Error("sync panicked", zap.String("repository", a.key), zap.ByteString("stack", d.stack))
		panic(err) // crash this actor alone; the supervisor restarts it
	}
	a.memory = d.mem
	a.stats.Syncs++
	a.stats.LastError = d.err
	a.answer(d.job.waiters, d.err)

	if a.removing {
		a.setAPIWait(false)
		ctx.Stop(ctx.Self())
		return
	}
	a.setAPIWait(errors.Is(d.err, ErrAPIUnreachable))
	a.waitingDeps = errors.Is(d.err, ErrWaiting)
	switch {
	case a.waitingDeps:
		// Woken when a dependency turns Ready; rechecked in case no wake comes.
		a.retries.reset()
		a.stopRetry()
		a.failed = &SyncRequest{Trigger: TriggerDependency}
		a.retryTimer = a.after(DependencyRecheck, &retryTick{})
	case d.err == nil:
		// A drift check folded into this sync, or owed by a failed sync
		// whose retry this success makes moot, runs next.
		owed := req.Drift || (a.failed != nil && a.failed.checksDrift())
		a.retries.reset()
		a.stopRetry()
		if owed && req.Trigger != TriggerReconcile && a.repo.Spec.DriftMode() != v1alpha1.DriftIgnore {
			a.follow(SyncRequest{Trigger: TriggerReconcile})
		}
	case errors.Is(d.err, ErrStalled):
		// Retrying cannot help until git, the spec or a person acts.
		a.stopRetry()
		a.sys.log.Warn("sync stalled; waiting for a new commit, a spec change or a manual request",
			zap.String("repository", a.key), zap.Error(d.err))
	default:
		a.retryLater(req, d.err)
	}
	if a.next != nil {
		next := *a.next
		a.next = nil
		a.trigger(ctx, next)
	}
}

func (a *repoActor) retryLater(req SyncRequest, err error) {
	delay := a.retries.next(a.sys.cfg.Backoff, time.Now(), rand.Float64())
	a.sys.log.Warn("sync failed; retrying",
		zap.String("repository", a.key), zap.String("trigger", string(req.Trigger)),
		zap.Duration("delay", delay), zap.Error(err))
	req.Retry = true
	a.failed = &req
	stopTimer(a.retryTimer)
	a.retryTimer = a.after(delay, &retryTick{})
}

func (a *repoActor) stopRetry() {
	stopTimer(a.retryTimer)
	a.failed = nil
}

// setAPIWait keeps the System's count of repositories waiting for the API
// server in step with this actor's flag.
func (a *repoActor) setAPIWait(wait bool) {
	if wait == a.apiWait {
		return
	}
	a.apiWait = wait
	if wait {
		a.sys.apiWaiting.Add(1)
	} else {
		a.sys.apiWaiting.Add(-1)
	}
}

// remove stops the actor once no sync runs; the supervisor then calls
// OnRemove.
func (a *repoActor) remove(ctx actor.Context) {
	a.removing = true
	a.halt(errStopped)
	if a.running == nil {
		ctx.Stop(ctx.Self())
		return
	}
	a.running.cancel()
}

// halt stops the timers and answers every waiting SyncNow.
func (a *repoActor) halt(err error) {
	a.stopTimers()
	a.next = nil
	a.answer(a.waiters, err)
	a.waiters = nil
	if a.running != nil && !a.removing {
		a.answer(a.running.waiters, err)
		a.running.waiters = nil
	}
}

func (a *repoActor) answer(waiters []chan<- error, err error) {
	for _, w := range waiters {
		w <- err // buffered: never blocks
	}
}

func (a *repoActor) armTimers() {
	stopTimer(a.poll)
	stopTimer(a.drift)
	a.armPoll(spread(a.repo.Spec.PollInterval(), rand.Float64()))
	a.armDrift(spread(a.repo.Spec.DriftInterval(), rand.Float64()))
}

func (a *repoActor) armPoll(d time.Duration) {
	a.poll, a.pollDue = a.tickAfter(d, TriggerPoll)
}

// armDrift skips the drift timer of a repository whose drift mode is Ignore.
func (a *repoActor) armDrift(d time.Duration) {
	a.driftDue = time.Time{}
	if a.repo.Spec.DriftMode() != v1alpha1.DriftIgnore {
		a.drift, a.driftDue = a.tickAfter(d, TriggerReconcile)
	}
}

// tickAfter sends a tick of trigger after about d, on the shared grid
// (aligned), and returns its timer and when it fires.
func (a *repoActor) tickAfter(d time.Duration, trigger Trigger) (*time.Timer, time.Time) {
	now := time.Now()
	d = aligned(now, d)
	return a.after(d, &tick{trigger: trigger}), now.Add(d)
}

func (a *repoActor) stopTimers() {
	stopTimer(a.poll)
	stopTimer(a.drift)
	stopTimer(a.retryTimer)
	a.pollDue, a.driftDue = time.Time{}, time.Time{}
}

// after sends msg to the actor after d, without a goroutine while waiting.
func (a *repoActor) after(d time.Duration, msg any) *time.Timer {
	root, self := a.sys.root, a.self
	return time.AfterFunc(d, func() { root.Send(self, msg) })
}

func (a *repoActor) status() RepoStatus {
	st := a.stats
	st.Key, st.Pending = a.key, a.next != nil
	st.Generation, st.ResourceVersion = a.repo.Generation, a.repo.ResourceVersion
	st.NextPoll, st.NextDrift = a.pollDue, a.driftDue
	switch {
	case a.running != nil:
		st.State = StateSyncing
	case a.repo.Spec.Suspend:
		st.State = StateSuspended
	default:
		st.State = StateIdle
	}
	return st
}
