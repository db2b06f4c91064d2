package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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
// lead while this replica holds the Lease. The Lease is released only after
// lead has returned, so two replicas never sync at once; a clean shutdown
// releases it at once and a standby takes over without waiting for it to
// expire. Losing the Lease is an error: the process exits and restarts as a
// standby.
func runLeaderElection(ctx context.Context, c config, kube kubernetes.Interface, log *zap.Logger, lead func(context.Context) error) error {
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	id := fmt.Sprintf("%s_%d", host, os.Getpid())
	electionCtx, cancelElection := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElection()
	started, done := make(chan struct{}), make(chan struct{})
	var leadErr error
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: leaseName, Namespace: c.LeaseNamespace},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   c.LeaseDuration,
		RenewDeadline:   c.RenewDeadline,
		RetryPeriod:     c.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaseCtx context.Context) {
				close(started)
				defer close(done)
				log.Info("became leader", zap.String("identity", id))
				// Lead until the process stops or the Lease is lost.
				leadCtx, cancel := context.WithCancel(leaseCtx)
				defer context.AfterFunc(ctx, cancel)()
				defer cancel()
				leadErr = lead(leadCtx)
			},
			OnStoppedLeading: func() { log.Info("stopped leading", zap.String("identity", id)) },
			OnNewLeader: func(leader string) {
				if leader != id {
					log.Info("standing by", zap.String("leader", leader))
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election in namespace %s: %w", c.LeaseNamespace, err)
	}
	// On shutdown, end the election (releasing the Lease) only once the
	// actors have stopped.
	defer context.AfterFunc(ctx, func() {
		select {
		case <-started:
			<-done
		default:
		}
		cancelElection()
	})()
	le.Run(electionCtx)
	select {
	case <-started:
		<-done
	default:
	}
	if leadErr != nil {
		return leadErr
	}
	if ctx.Err() == nil {
		return fmt.Errorf("lost the Lease %s/%s: exiting so that this replica restarts as a standby", c.LeaseNamespace, leaseName)
	}
	return nil
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
