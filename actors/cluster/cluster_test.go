package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
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
// its own actor system.
func startMembers(t *testing.T, ns string, n int) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, n)
	for i := range n {
		nodes = append(nodes, startMember(t, ns, i, testRenew, nil))
	}
	return nodes
}

// startMember starts member i with handler h, by default one that replies
// with the member's address and the key it was asked about. It is stopped
// when the test ends.
func startMember(t *testing.T, ns string, i int, renew time.Duration, h Handler) *Node {
	system := actor.NewActorSystem(actor.WithLoggerFactory(quietLogger))
	var self *Node
	if h == nil {
		h = func(key string, _ *structpb.Struct) (*structpb.Struct, error) {
			return structpb.NewStruct(map[string]any{"member": self.Address(), "key": key})
		}
	}
	node, err := Start(system, Config{
		Name: "c", Host: "127.0.0.1", Handler: h,
		Lease: LeaseConfig{Client: env.Kube, Namespace: ns, Member: fmt.Sprintf("m%d", i), Duration: 10 * renew, RenewEvery: renew},
	})
	if err != nil {
		t.Error(err)
		return nil
	}
	self = node
	t.Cleanup(func() { node.Stop(false) })
	return node
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
			if got := n.Members(); got != want {
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
	stale.provider.stopRenewing()
	stopped := time.Now()
	select {
	case <-stale.Lost():
	case <-time.After(testTimeout):
		t.Fatalf("the member whose Lease is not renewed was not fenced within %s", testTimeout)
	}
	if stale.Owns("team-0/app-0") || stale.Owns("team-1/app-1") {
		t.Fatal("a fenced member still owns repositories")
	}
	fenced := time.Since(stopped)
	for _, n := range nodes[:2] {
		if got := n.Members(); got != 3 {
			t.Fatalf("member %s dropped the stale member %s before it fenced itself (sees %d)", n.Address(), fenced, got)
		}
	}
	waitMembers(t, nodes[:2], 2, testTimeout+3*testRenew)
	// The dropped member fenced itself, so its repositories are owned at
	// once, without the settle delay that a join needs.
	if _, err := owners(nodes[:2], keys(300)); err != nil {
		t.Fatalf("as soon as both dropped the stale member: %v", err)
	}
	t.Logf("fenced itself after %s, dropped by the others (who own its repositories at once) after %s (timeout %s)", fenced, time.Since(stopped), testTimeout)
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

// TestOwnershipIsExclusiveAndMovesWhenAMemberLeaves: 300 repositories are
// each owned by exactly one of three members, every member owns some, and
// when a member leaves exactly its repositories move. (The ±30% spread is
// checked on fixed addresses in TestPlacementSpread: here the loopback
// ports are random and the engine's hash is biased by the address.)
func TestOwnershipIsExclusiveAndMovesWhenAMemberLeaves(t *testing.T) {
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
		if count[n] == 0 {
			t.Fatalf("member %s owns none of 300 repositories (shares %v)", n.Address(), shares(nodes, count))
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
	var remote []time.Duration
	for _, k := range keys(12) {
		for _, n := range nodes {
			began := time.Now()
			reply, err := n.Request(ctx, k, &structpb.Struct{})
			if err != nil {
				t.Fatal(err)
			}
			if n.Owner(k) != n.Address() {
				remote = append(remote, time.Since(began))
			}
			if got, want := reply.Fields["member"].GetStringValue(), n.Owner(k); got != want {
				t.Fatalf("request for %s from %s ran on %s, want the owner %s", k, n.Address(), got, want)
			}
			if got := reply.Fields["key"].GetStringValue(); got != k {
				t.Fatalf("the owner's handler got key %q, want %q", got, k)
			}
		}
	}
	slices.Sort(remote)
	t.Logf("request to another member's virtual actor: p50 %s over %d (first activation included)", remote[len(remote)/2], len(remote))
}

// TestJoiningMemberTakesAShareWithoutDoubleOwnership: a fourth member
// joins three; sampled throughout the move, no repository is ever owned by
// two members, and at the end the newcomer owns a share taken only from
// the others' repositories. The renew period is long here so that the old
// members see the newcomer well after it sees itself.
func TestJoiningMemberTakesAShareWithoutDoubleOwnership(t *testing.T) {
	const renew = 2 * time.Second
	ns := env.Namespace(t)
	var nodes []*Node
	for i := range 3 {
		nodes = append(nodes, startMember(t, ns, i, renew, nil))
	}
	waitMembers(t, nodes, 3, 3*renew)
	ks := keys(300)
	var before map[string]*Node
	testenv.Eventually(t, 6*renew, func() (err error) { before, err = owners(nodes, ks); return err })

	joined := make(chan *Node, 1)
	go func() { joined <- startMember(t, ns, 3, renew, nil) }()
	var all []*Node
	var after map[string]*Node
	deadline := time.Now().Add(8 * renew)
	for after == nil {
		if time.Now().After(deadline) {
			t.Fatal("the fourth member never got a settled share")
		}
		select {
		case n := <-joined:
			all = append(append([]*Node{}, nodes...), n)
		default:
		}
		cur := nodes
		if all != nil {
			cur = all
		}
		got, err := owners(cur, ks)
		if err != nil && strings.Contains(err.Error(), "owned by both") {
			t.Fatal(err)
		}
		if err == nil && all != nil && countOf(got, all[3]) > 0 && allSee(all, 4) {
			after = got
		}
	}
	moved := countOf(after, all[3])
	for _, k := range ks {
		if after[k] != before[k] && after[k] != all[3] {
			t.Fatalf("%s moved between old members (%s to %s)", k, before[k].Address(), after[k].Address())
		}
	}
	t.Logf("%d of 300 repositories moved to the joining member", moved)
}

func countOf(owner map[string]*Node, n *Node) int {
	c := 0
	for _, o := range owner {
		if o == n {
			c++
		}
	}
	return c
}

func allSee(nodes []*Node, want int) bool {
	for _, n := range nodes {
		if n.Members() != want {
			return false
		}
	}
	return true
}

// TestStartFailsWhenTheLeaseCannotBeWritten: a member that cannot write its
// Lease (here: its namespace does not exist) does not join, and says which
// Lease and why.
func TestStartFailsWhenTheLeaseCannotBeWritten(t *testing.T) {
	_, err := Start(actor.NewActorSystem(actor.WithLoggerFactory(quietLogger)), Config{
		Name: "c", Host: "127.0.0.1",
		Lease:   LeaseConfig{Client: env.Kube, Namespace: "no-such-namespace", Member: "m0", Duration: testTimeout, RenewEvery: testRenew},
		Handler: func(string, *structpb.Struct) (*structpb.Struct, error) { return nil, nil },
	})
	if err == nil || !strings.Contains(err.Error(), "no-such-namespace/c-m0") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Start = %v, want an error naming Lease no-such-namespace/c-m0 and why", err)
	}
}

// TestLeaseConfigIsChecked: the renew period must leave room for fencing.
func TestLeaseConfigIsChecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  LeaseConfig
		want string
	}{
		{"no client", LeaseConfig{Namespace: "ns", Member: "m"}, "required"},
		{"renew too slow", LeaseConfig{Client: env.Kube, Namespace: "ns", Member: "m", Duration: 4 * time.Second, RenewEvery: 2 * time.Second}, "at most a quarter"},
		{"defaults", LeaseConfig{Client: env.Kube, Namespace: "ns", Member: "m"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLeaseProvider(tc.cfg)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("NewLeaseProvider = %v, want error containing %q", err, tc.want)
			}
		})
	}
}
