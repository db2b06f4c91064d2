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

// runLeaderElection blocks until ctx ends, calling lead with a context that
// lives while this replica holds the Lease. The Lease is released on the
// way out so a standby takes over at once after a clean shutdown.
func runLeaderElection(ctx context.Context, c config, kube kubernetes.Interface, log *zap.Logger, lead func(context.Context)) error {
	id, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	id = fmt.Sprintf("%s_%d", id, os.Getpid())
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: leaseName, Namespace: c.LeaseNamespace},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   c.LeaseDuration,
		RenewDeadline:   c.RenewDeadline,
		RetryPeriod:     c.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("became leader", zap.String("identity", id))
				lead(ctx)
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
	le.Run(ctx)
	return nil
}

// handoffSink is the webhook sink of a standby replica: it hands a verified
// push to the leader by setting the requestedAt annotation, which the
// leader's watcher turns into a sync.
type handoffSink struct {
	dyn dynamic.Interface
	log *zap.Logger
}

func (h handoffSink) Webhook(key types.NamespacedName, commit string) error {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			v1alpha1.AnnotationRequestedAt: time.Now().UTC().Format(time.RFC3339Nano),
		}}})
		_, err := h.dyn.Resource(v1alpha1.GitRepositoryResource).Namespace(key.Namespace).
			Patch(ctx, key.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: v1alpha1.FieldManager})
		if err != nil {
			h.log.Error("hand webhook to leader", zap.String("repository", key.String()), zap.String("commit", commit), zap.Error(err))
		}
	}()
	return nil
}
