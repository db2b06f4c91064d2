package test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestLeaderFenceOnAPIPartition: two replicas in leader mode, each behind
// its own TCP proxy to the API server. The leader's proxy is blackholed in
// the middle of a 300-object apply, so its requests neither arrive nor
// fail. The leader must stop (exit) before the standby can take the Lease,
// and the standby must converge on the commit the leader was applying.
func TestLeaderFenceOnAPIPartition(t *testing.T) {
	ns := env.Namespace(t)
	repo := gitserver.New(t).CreateRepo(t, "big")
	commit := repo.CommitStrings("first", bigRepoFiles(ns, "1"))

	// The renew deadline is half the lease: the leader has 4 s of margin
	// between giving up and the earliest moment a standby may take over.
	flags := []string{"--leader-elect", "--lease-namespace", ns, "--watch-namespace", ns, "--webhook-secret-file", secretFile(t),
		"--leader-elect-lease-duration", "8s", "--leader-elect-renew-deadline", "4s", "--leader-elect-retry-period", "1s"}
	pa, pb := newAPIProxy(t), newAPIProxy(t)
	a := startController(t, append(flags, "--kubeconfig", pa.kubeconfig(t))...)
	b := startController(t, append(flags, "--kubeconfig", pb.kubeconfig(t))...)
	a.waitReady(t)
	b.waitReady(t)
	createRepo(t, ns, "big", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "big", v1alpha1.PhaseSynced, commit, 2*time.Minute)

	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	idOf := func(p *proc) string { return fmt.Sprintf("%s_%d", host, p.cmd.Process.Pid) }
	leader, standby, leaderProxy := a, b, pa
	if holder := leaseHolder(t, ns); holder == idOf(b) {
		leader, standby, leaderProxy = b, a, pb
	} else if holder != idOf(a) {
		t.Fatalf("Lease holder %q is neither replica (%s, %s)", holder, idOf(a), idOf(b))
	}

	// Slow the leader's API connection so that the partition lands
	// mid-apply, then partition it.
	leaderProxy.slow(20 * time.Millisecond)
	commit = repo.CommitStrings("second", bigRepoFiles(ns, "2"))
	pushBigCommit(t, leader.webhook, repo, commit, func() string { v, _ := configMapValue(ns, "cm-00-0"); return v })
	exited := make(chan time.Time, 1)
	go func() {
		err := <-leader.done
		exited <- time.Now()
		leader.done <- err // for the cleanup
	}()
	leaderProxy.blackhole()
	if v, _ := configMapValue(ns, "cm-29-9"); v == "2" {
		t.Fatal("the apply finished before the partition: the test proves nothing; slow the proxy more")
	}

	// The handover is when the standby acquired the Lease, by its own
	// clock (the same machine's).
	var handover time.Time
	testenv.Eventually(t, time.Minute, func() error {
		l := lease(t, ns)
		if l == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != idOf(standby) || l.Spec.AcquireTime == nil {
			return fmt.Errorf("the standby does not hold the Lease yet")
		}
		handover = l.Spec.AcquireTime.Time
		return nil
	})
	select {
	case at := <-exited:
		if !at.Before(handover) {
			t.Fatalf("the partitioned leader exited at %s, after the standby took over at %s", at.Format(time.StampMicro), handover.Format(time.StampMicro))
		}
		t.Logf("the partitioned leader exited %s before the handover", handover.Sub(at).Round(time.Millisecond))
	default:
		t.Fatalf("the partitioned leader still runs after the standby took the Lease at %s", handover.Format(time.StampMicro))
	}
	if leader.cmd.ProcessState.Success() {
		t.Fatal("the leader that lost the Lease exited 0; want an error, so that Kubernetes restarts it")
	}

	waitPhase(t, ns, "big", v1alpha1.PhaseSynced, commit, 2*time.Minute)
	wantConfigMaps(t, ns, "after the handover", bigRepoObjects("2"))
	if n := standby.metricValue(t, "alumiini_repository_actors"); n != 1 {
		t.Fatalf("the new leader runs %v repository actors, want 1", n)
	}
}

// lease is the leader-election Lease of ns, or nil.
func lease(t *testing.T, ns string) *coordinationv1.Lease {
	t.Helper()
	l, err := env.Kube.CoordinationV1().Leases(ns).Get(context.Background(), "alumiini-leader", metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return l
}

// leaseHolder is the identity in the leader-election Lease of ns.
func leaseHolder(t *testing.T, ns string) string {
	if l := lease(t, ns); l != nil && l.Spec.HolderIdentity != nil {
		return *l.Spec.HolderIdentity
	}
	return ""
}
