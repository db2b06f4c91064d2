package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

const leaseName = "alumiini-leader"

// runLeaderElection blocks until ctx ends or the Lease is lost, running
// lead while this replica holds the Lease. lead gets two contexts: one that
// ends when it must stop leading (signal or lost Lease), and a fence that
// ends only when the Lease is lost, past which it must not write. On a clean
// stop the Lease is released after lead returned, so a standby takes over at
// once and two replicas never sync together. Losing the Lease is an error:
// the process exits and restarts as a standby.
func runLeaderElection(ctx context.Context, c config, kube kubernetes.Interface, log *zap.Logger,
	lead func(ctx, fence context.Context) error) error {
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	id := fmt.Sprintf("%s_%d", host, os.Getpid())
	electionCtx, cancelElection := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElection()
	t := &term{ctx: ctx, id: id, log: log, lead: lead, cancelElection: cancelElection, done: make(chan struct{})}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: leaseName, Namespace: c.LeaseNamespace},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration: c.LeaseDuration,
		RenewDeadline: c.RenewDeadline,
		RetryPeriod:   c.RetryPeriod,
		Name:          leaseName,
		Callbacks:     t.callbacks(),
	})
	if err != nil {
		return fmt.Errorf("leader election in namespace %s: %w", c.LeaseNamespace, err)
	}
	// On a signal, end the election once the actors have stopped (lead
	// returns after they did, and then cancels the election itself).
	defer context.AfterFunc(ctx, func() {
		if !t.isLeading() {
			cancelElection()
		}
	})()
	le.Run(electionCtx)
	if !t.close() {
		return nil
	}
	<-t.done
	leadErr := t.result()
	switch {
	case ctx.Err() != nil && leadErr == nil:
		releaseLease(c, kube, id, log)
		return nil
	case leadErr != nil:
		return leadErr
	}
	return fmt.Errorf("lost the Lease %s/%s: exiting so that this replica restarts as a standby", c.LeaseNamespace, leaseName)
}

// term is one leader election of this process: whether it led, and how
// leading ended. The elector calls back on its own goroutines.
type term struct {
	ctx            context.Context // the process's: a signal ends leading
	id             string
	log            *zap.Logger
	lead           func(ctx, fence context.Context) error
	cancelElection context.CancelFunc
	done           chan struct{} // closed when lead returned

	mu      sync.Mutex
	leading bool
	closed  bool // the election ended: a late start must not lead
	err     error
}

func (t *term) callbacks() leaderelection.LeaderCallbacks {
	return leaderelection.LeaderCallbacks{
		OnStartedLeading: t.started,
		OnStoppedLeading: func() { t.log.Info("stopped leading", zap.String("identity", t.id)) },
		OnNewLeader: func(leader string) {
			if leader != t.id {
				t.log.Info("standing by", zap.String("leader", leader))
			}
		},
	}
}

// started runs lead for as long as the Lease is held and ctx lasts.
func (t *term) started(leaseCtx context.Context) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.leading = true
	t.mu.Unlock()
	defer close(t.done)
	// Whatever ends lead ends the election too: a replica that cannot lead
	// must not keep the Lease.
	defer t.cancelElection()
	t.log.Info("became leader", zap.String("identity", t.id))
	leadCtx, cancel := context.WithCancel(leaseCtx)
	defer context.AfterFunc(t.ctx, cancel)()
	defer cancel()
	err := t.lead(leadCtx, leaseCtx)
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
}

func (t *term) isLeading() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.leading
}

// close ends the term and reports whether this replica led in it.
func (t *term) close() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return t.leading
}

func (t *term) result() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// releaseLease gives the Lease up if this replica still holds it, so that
// a standby need not wait for it to expire.
func releaseLease(c config, kube kubernetes.Interface, id string, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leases := kube.CoordinationV1().Leases(c.LeaseNamespace)
	lease, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != id {
		return
	}
	empty, one := "", int32(1)
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds = &empty, &one
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		log.Warn("release the Lease", zap.Error(err))
		return
	}
	log.Info("released the Lease", zap.String("identity", id))
}

// handoffSink is the webhook sink of a standby replica: it hands a verified
// push to the leader by setting the requestedAt annotation, which the
// leader's watcher turns into a sync. The patch is synchronous so that a
// failed handoff makes the webhook reply 503 and the provider retries.
type handoffSink struct{ dyn dynamic.Interface }

func (h handoffSink) Webhook(key types.NamespacedName, _ string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		v1alpha1.AnnotationRequestedAt: time.Now().UTC().Format(time.RFC3339Nano),
	}}})
	if err != nil {
		return err
	}
	_, err = h.dyn.Resource(v1alpha1.GitRepositoryResource).Namespace(key.Namespace).
		Patch(ctx, key.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: v1alpha1.FieldManager})
	if err != nil {
		return fmt.Errorf("hand the push for %s to the leader: %w", key, err)
	}
	return nil
}
