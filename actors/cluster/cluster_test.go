package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/false-systems/alumiini/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const (
	testTimeout = 3 * time.Second
	testRenew   = 300 * time.Millisecond
)

// startMembers starts n members of one cluster on loopback ports, each with
// its own actor system, whose Handler replies with the member's address.
func startMembers(t *testing.T, ns string, n int) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, n)
	for i := range n {
		system := actor.NewActorSystem(actor.WithLoggerFactory(quietLogger))
		var self *Node
		node, err := Start(system, Config{
			Name: "c", Host: "127.0.0.1",
			Lease: LeaseConfig{Client: env.Kube, Namespace: ns, Member: fmt.Sprintf("m%d", i), Duration: testTimeout, RenewEvery: testRenew},
			Handler: func(key string, _ *structpb.Struct) (*structpb.Struct, error) {
				return structpb.NewStruct(map[string]any{"member": self.Address(), "key": key})
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		self = node
		nodes = append(nodes, node)
		t.Cleanup(func() { node.Stop(false) })
	}
	return nodes
}

// quietLogger keeps the engine's info logs out of test output.
func quietLogger(*actor.ActorSystem) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// waitMembers waits until every node sees exactly want members.
func waitMembers(t *testing.T, nodes []*Node, want int, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, within, func() error {
		for _, n := range nodes {
			if got := n.Cluster.MemberList.Members().Len(); got != want {
				return fmt.Errorf("member %s sees %d members, want %d", n.Address(), got, want)
			}
		}
		return nil
	})
}

// TestMembersSeeEachOtherAndDropOneThatStopsRenewing: three members find
// each other through their Leases; one whose Lease stops being renewed
// (its process still running and reachable) fences itself before the
// others drop it, and they drop it within the membership timeout.
func TestMembersSeeEachOtherAndDropOneThatStopsRenewing(t *testing.T) {
	nodes := startMembers(t, env.Namespace(t), 3)
	waitMembers(t, nodes, 3, 10*time.Second)

	stale := nodes[2]
	if err := stale.provider.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	testenv.Eventually(t, testTimeout, func() error {
		if stale.provider.Fresh() {
			return fmt.Errorf("the member whose Lease is not renewed still counts itself fresh")
		}
		return nil
	})
	fenced := time.Since(stopped)
	for _, n := range nodes[:2] {
		if got := n.Cluster.MemberList.Members().Len(); got != 3 {
			t.Fatalf("member %s dropped the stale member %s before it fenced itself (sees %d)", n.Address(), fenced, got)
		}
	}
	waitMembers(t, nodes[:2], 2, testTimeout+3*testRenew)
	t.Logf("fenced itself after %s, dropped by the others after %s (timeout %s)", fenced, time.Since(stopped), testTimeout)
}

// keys returns n repository keys shaped like real ones.
func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("team-%d/app-%d", i%7, i)
	}
	return out
}

// owners maps each key to the one node that owns it, failing when a key
// has no owner or two.
func owners(nodes []*Node, ks []string) (map[string]*Node, error) {
	out := make(map[string]*Node, len(ks))
	for _, k := range ks {
		for _, n := range nodes {
			if !n.Owns(k) {
				continue
			}
			if prev, ok := out[k]; ok {
				return nil, fmt.Errorf("%s owned by both %s and %s", k, prev.Address(), n.Address())
			}
			out[k] = n
		}
		if out[k] == nil {
			return nil, fmt.Errorf("%s has no owner", k)
		}
	}
	return out, nil
}

// TestOwnershipSpreadsEvenlyAndMovesWhenAMemberLeaves: 300 repositories are
// each owned by exactly one of three members, within ±30% of an even share;
// when a member leaves, exactly its repositories move and the others stay.
func TestOwnershipSpreadsEvenlyAndMovesWhenAMemberLeaves(t *testing.T) {
	nodes := startMembers(t, env.Namespace(t), 3)
	waitMembers(t, nodes, 3, 10*time.Second)
	ks := keys(300)
	var before map[string]*Node
	testenv.Eventually(t, 5*time.Second, func() (err error) { before, err = owners(nodes, ks); return err })
	count := map[*Node]int{}
	for _, n := range before {
		count[n]++
	}
	for _, n := range nodes {
		if c := count[n]; c < 70 || c > 130 {
			t.Fatalf("member %s owns %d of 300 repositories, want 70..130 (all: %v)", n.Address(), c, shares(nodes, count))
		}
	}
	t.Logf("shares of 300: %v", shares(nodes, count))

	leaving := nodes[2]
	leaving.Stop(true)
	waitMembers(t, nodes[:2], 2, testTimeout)
	var after map[string]*Node
	testenv.Eventually(t, 5*time.Second, func() (err error) { after, err = owners(nodes[:2], ks); return err })
	moved := 0
	for _, k := range ks {
		if before[k] == leaving {
			moved++
		} else if after[k] != before[k] {
			t.Fatalf("%s moved from %s to %s though its owner stayed", k, before[k].Address(), after[k].Address())
		}
	}
	if moved != count[leaving] {
		t.Fatalf("%d repositories moved, want the leaving member's %d", moved, count[leaving])
	}
}

func shares(nodes []*Node, count map[*Node]int) []int {
	out := make([]int, len(nodes))
	for i, n := range nodes {
		out[i] = count[n]
	}
	return out
}

// TestRequestReachesTheOwnerFromAnyMember: a request about a repository
// sent to any member runs on the member that owns it, over gRPC.
func TestRequestReachesTheOwnerFromAnyMember(t *testing.T) {
	nodes := startMembers(t, env.Namespace(t), 3)
	waitMembers(t, nodes, 3, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range keys(12) {
		for _, n := range nodes {
			reply, err := n.Request(ctx, k, &structpb.Struct{})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := reply.Fields["member"].GetStringValue(), n.Owner(k); got != want {
				t.Fatalf("request for %s from %s ran on %s, want the owner %s", k, n.Address(), got, want)
			}
			if got := reply.Fields["key"].GetStringValue(); got != k {
				t.Fatalf("the owner's handler got key %q, want %q", got, k)
			}
		}
	}
}
