package pipeline

import (
	"context"
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
	if s.mem.Status != nil {
		return nil
	}
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
func (s *syncState) writeStatus(ctx context.Context, change func(st *v1alpha1.GitRepositoryStatus)) error {
	if err := s.refresh(); err != nil {
		s.log.Warn("status not written: cannot read the GitRepository", zap.Error(err))
		return err
	}
	next := s.mem.Status.DeepCopy()
	change(next)
	cur := *s.repo
	cur.Status = *s.mem.Status
	wctx, cancel := s.statusContext()
	defer cancel()
	if _, err := s.p.Status.Write(wctx, &cur, *next); err != nil {
		s.mem.Status = nil // the write may or may not have landed
		s.log.Warn("status write failed", zap.Error(err))
		return err
	}
	s.mem.Status = next
	return nil
}

// statusContext bounds a status read or write, detached from the sync's
// context (a sync that ran out of time can still say so) but not from the
// fence.
func (s *syncState) statusContext() (context.Context, context.CancelFunc) {
	parent := s.p.Fence
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, statusTimeout)
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
