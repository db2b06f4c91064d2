package pipeline

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// statusTimeout bounds a status read or write.
const statusTimeout = 10 * time.Second

// status is the status this sync goes by: the one this controller last
// wrote or read, else the informer's copy (which lacks the inventory; steps
// that need it run readStatus first).
func (s *syncState) status() *v1alpha1.GitRepositoryStatus {
	if s.mem.Status != nil {
		return s.mem.Status
	}
	return &s.repo.Status
}

// refresh reads the status from the API server unless the Memory holds the
// one this controller last wrote (only the leader writes status, and a new
// leader starts with empty Memories).
func (s *syncState) refresh() error {
	_ = s.settle() // a failed write was logged and forgot the status: read it again
	if s.mem.Status != nil {
		return nil
	}
	release, err := s.p.unslotted(s.slotted)
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := s.statusContext()
	defer cancel()
	cur, err := s.p.Status.Get(ctx, s.repo.Namespace, s.repo.Name)
	if err != nil {
		return err
	}
	s.mem.Status = &cur.Status
	return nil
}

// writeStatus applies change to the status and writes it unless unchanged.
// A failed write is logged, not fatal: the Memory forgets the status, so
// the next sync reads it again.
func (s *syncState) writeStatus(_ context.Context, change func(st *v1alpha1.GitRepositoryStatus)) error {
	if err := s.writeStatusBeside(change); err != nil {
		return err
	}
	return s.settle()
}

// writeStatusBeside starts writing the changed status and returns at once,
// so that a push's objects need not wait for the Syncing status to land.
// Meanwhile the Memory holds the new status; settle waits for the write
// and forgets the status if the write failed. Every later status read or
// write of the sync settles first. It fails only when the status cannot be
// read.
func (s *syncState) writeStatusBeside(change func(st *v1alpha1.GitRepositoryStatus)) error {
	if err := s.refresh(); err != nil { // settles the write in flight first
		s.log.Warn("status not written: cannot read the GitRepository", zap.Error(err))
		return err
	}
	next := s.mem.Status.DeepCopy()
	change(next)
	// Most drift checks end here. The statuses are copies of one value, so
	// reflect's comparison holds; it costs a fraction of the API's semantic
	// one, which the write still makes.
	if reflect.DeepEqual(s.mem.Status, next) {
		return nil // the API server holds it
	}
	// The write gets copies of its own: the sync goes on changing its state.
	cur := s.repo.DeepCopy()
	cur.Status = *s.mem.Status.DeepCopy()
	status := *next.DeepCopy()
	w := &statusWrite{done: make(chan struct{})}
	s.mem.Status, s.writing = next, w
	slotted := s.slotted
	go func() {
		defer close(w.done)
		release, err := s.p.unslotted(slotted)
		if err != nil {
			w.err = err
			return
		}
		defer release()
		ctx, cancel := s.statusContext()
		defer cancel()
		_, w.err = s.p.Status.Write(ctx, cur, status)
	}()
	return nil
}

// statusWrite is a status write in flight; err is set before done closes.
type statusWrite struct {
	done chan struct{}
	err  error
}

// settle waits for the status write in flight, if any, and returns its
// error.
func (s *syncState) settle() error {
	w := s.writing
	if w == nil {
		return nil
	}
	s.writing = nil
	<-w.done
	if w.err != nil {
		s.mem.Status = nil // the write may or may not have landed
		s.log.Warn("status write failed", zap.Error(w.err))
	}
	return w.err
}

// statusContext bounds a status read or write, detached from the sync's
// context (a sync that ran out of time can still say so) but not from the
// fence.
func (s *syncState) statusContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.p.fence(), statusTimeout)
}

// fence is Pipeline.Fence, or a context that never ends.
func (p *Pipeline) fence() context.Context {
	if p.Fence == nil {
		return context.Background()
	}
	return p.Fence
}

// setCondition sets a condition, keeping its transition time when its
// status did not change, so an unchanged sync produces an equal status and
// no write.
func setCondition(st *v1alpha1.GitRepositoryStatus, typ string, status bool, reason, msg string, gen int64) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: metaNow(),
	})
}

func dropCondition(st *v1alpha1.GitRepositoryStatus, typ string) {
	meta.RemoveStatusCondition(&st.Conditions, typ)
}

// metaNow is the current time at the API's one-second precision, so the
// value written equals the value read back.
func metaNow() metav1.Time { return metav1.Now().Rfc3339Copy() }

// unslotted waits for the status gate (Pipeline.StatusGate) unless the
// sync holds a slot, and returns its release. The wait is bounded by the
// fence only: each holder holds it for one request of at most
// statusTimeout, and a timeout here would drop a Failed status that a
// sync out of time must still write. statusTimeout starts once the gate
// is held.
func (p *Pipeline) unslotted(slotted bool) (func(), error) {
	if slotted || p.StatusGate == nil {
		return func() {}, nil
	}
	if err := p.StatusGate.Acquire(p.fence(), 1); err != nil {
		return nil, fmt.Errorf("wait for the status gate: %w", err)
	}
	return func() { p.StatusGate.Release(1) }, nil
}
