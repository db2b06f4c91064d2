package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic/dynamicinformer"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/view"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// nopSyncer finishes every sync at once: the actors' state is what the
// test reads, not what a sync does.
type nopSyncer struct{}

func (nopSyncer) Sync(_ context.Context, _ *v1alpha1.GitRepository, _ actors.SyncRequest, mem actors.Memory) (actors.Memory, error) {
	return mem, nil
}

// localStatus is a member's StatusFunc over its own actor system, as the
// binary's (cmd/alumiini, actorView.local) without the restart count.
func localStatus(sys *actors.System) StatusFunc {
	return func(ctx context.Context, key string) (view.Repository, error) {
		st, err := sys.Status(ctx, key)
		if err != nil {
			return view.Repository{}, err
		}
		return st.View(0), nil
	}
}

// TestStatusIsAnsweredByTheOwnerFromAnyMember: three members, each with a
// real actor system that watches the same GitRepositories and runs only
// those its member owns. Asked from any member, the status of a repository
// is its owner's actor's (the other members run no actor for it), and a
// repository that no member runs is reported not found, distinguishably,
// from every member. An owner that the others list but cannot reach is an
// error that names it, not "not found".
func TestStatusIsAnsweredByTheOwnerFromAnyMember(t *testing.T) {
	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ks []string
	for i := range 9 {
		name := fmt.Sprintf("app-%d", i)
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "GitRepository",
			"metadata": map[string]any{"namespace": ns, "name": name},
			"spec":     map[string]any{"url": "https://git.example/" + name + ".git", "interval": "1h", "reconcileInterval": "1h"},
		}}
		if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		ks = append(ks, ns+"/"+name)
	}

	const n = 3
	nodes := make([]*Node, n)
	systems := make([]*actors.System, n)
	for i := range n {
		sys := actors.NewSystem(actors.Config{Syncer: nopSyncer{}, Owns: func(k string) bool { return nodes[i].Owns(k) }})
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sys.Shutdown(ctx)
		})
		systems[i] = sys
		nodes[i] = startMember(t, ns, i, testRenew, NewHandler(sys, localStatus(sys)))
	}
	waitMembers(t, nodes, n, 10*time.Second)
	var owner map[string]*Node
	testenv.Eventually(t, 5*time.Second, func() (err error) { owner, err = owners(nodes, ks); return err })
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(env.Dynamic, 0, ns, nil)
	informer := factory.ForResource(v1alpha1.GitRepositoryResource).Informer()
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	for _, sys := range systems {
		if err := sys.WatchInformer(ctx, informer); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, k := range ks {
			sys := systems[slices.Index(nodes, owner[k])]
			if st, err := sys.Status(ctx, k); err != nil || st.Syncs != 1 {
				return fmt.Errorf("the owner's actor of %s: %+v, %v; want one sync done", k, st, err)
			}
		}
		return nil
	})

	remote := 0
	for _, k := range ks {
		for j, from := range nodes {
			if from != owner[k] {
				remote++
				if _, err := systems[j].Status(ctx, k); !errors.Is(err, actors.ErrNotFound) {
					t.Fatalf("member %d runs an actor for %s, which it does not own (%v)", j, k, err)
				}
			}
			got, err := from.Status(ctx, k)
			if err != nil {
				t.Fatalf("status of %s from member %d: %v", k, j, err)
			}
			want := view.Repository{Namespace: ns, Name: strings.TrimPrefix(k, ns+"/"),
				State: "idle", Syncs: 1, Generation: 1, LastTrigger: string(actors.TriggerStartup)}
			if got.NextPoll == nil || got.NextDriftCheck == nil {
				t.Fatalf("status of %s from member %d: %+v, want both timers armed", k, j, got)
			}
			got.NextPoll, got.NextDriftCheck = nil, nil
			if got != want {
				t.Fatalf("status of %s from member %d = %+v, want the owner's actor: %+v", k, j, got, want)
			}
		}
	}
	if remote == 0 {
		t.Fatal("every status was asked of its owner: the test asked no other member")
	}

	// A repository that no member runs: every member says not found, also
	// where the placement names another member.
	for j, from := range nodes {
		for _, k := range []string{ns + "/missing-0", ns + "/missing-1", ns + "/missing-2"} {
			_, err := from.Status(ctx, k)
			if !errors.Is(err, actors.ErrNotFound) {
				t.Fatalf("status of %s from member %d: %v, want actors.ErrNotFound", k, j, err)
			}
		}
	}

	// The owner of ks[0] stops answering member traffic: its gRPC server
	// stops, its Lease is still renewed, so the others keep it as the
	// owner. (Node.Stop would also tell them through the gossip that it
	// left, and they would move its repositories at once.) Asking them
	// fails, naming it.
	dead := owner[ks[0]]
	dead.Cluster.Remote.Shutdown(false)
	for _, from := range nodes {
		if from == dead {
			continue
		}
		short, cancel := context.WithTimeout(ctx, time.Second)
		_, err := from.Status(short, ks[0])
		cancel()
		if err == nil || errors.Is(err, actors.ErrNotFound) || !strings.Contains(err.Error(), dead.Address()) {
			t.Fatalf("status of %s, whose owner is unreachable, from %s: %v; want an error naming the owner %s, not ErrNotFound", ks[0], from.Address(), err, dead.Address())
		}
		t.Logf("owner unreachable: %v", err)
	}
}
