package cluster

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/test/testenv"
)

// pushes records the webhooks a member's actor system was handed.
type pushes struct {
	mu  sync.Mutex
	got []string
}

func (p *pushes) Webhook(key types.NamespacedName, commit string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, key.String()+"@"+commit)
	return nil
}

func (p *pushes) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// TestWebhookOnANonOwnerReachesTheOwnersActor: a push that reaches any
// member is handed, with its commit, to the owner's actor system and to no
// other member's.
func TestWebhookOnANonOwnerReachesTheOwnersActor(t *testing.T) {
	ns := env.Namespace(t)
	locals := []*pushes{{}, {}, {}}
	var nodes []*Node
	for i, l := range locals {
		nodes = append(nodes, startMember(t, ns, i, testRenew, NewHandler(l, nil)))
	}
	waitMembers(t, nodes, 3, 10*time.Second)
	ks := keys(6)
	var owner map[string]*Node
	testenv.Eventually(t, 5*time.Second, func() (err error) { owner, err = owners(nodes, ks); return err })

	want := make([][]string, len(nodes))
	forwarded := 0
	for i, k := range ks {
		nn, err := splitKey(k)
		if err != nil {
			t.Fatal(err)
		}
		from := nodes[i%len(nodes)]
		commit := fmt.Sprintf("c%d", i)
		sink := &Sink{Node: from, Local: locals[i%len(nodes)]}
		if err := sink.Webhook(nn, commit); err != nil {
			t.Fatal(err)
		}
		o := slices.Index(nodes, owner[k])
		if owner[k] != from {
			forwarded++
		}
		want[o] = append(want[o], k+"@"+commit)
	}
	if forwarded == 0 {
		t.Fatal("every push went to its owner: the test forwarded nothing")
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for i, l := range locals {
			got := slices.Sorted(slices.Values(l.all()))
			if w := slices.Sorted(slices.Values(want[i])); !slices.Equal(got, w) {
				return fmt.Errorf("member %d was handed %v, want %v", i, got, w)
			}
		}
		return nil
	})
}

// TestWebhookFallsBackWhenTheOwnerIsUnreachable: while the others still
// list a member that has died (its Lease not yet expired), a push for one
// of its repositories cannot be forwarded and goes to the fallback.
func TestWebhookFallsBackWhenTheOwnerIsUnreachable(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startMembers(t, ns, 2)
	waitMembers(t, nodes, 2, 10*time.Second)
	var k string
	for _, c := range keys(50) {
		if nodes[0].Owner(c) == nodes[1].Address() {
			k = c
			break
		}
	}
	if k == "" {
		t.Fatal("member 1 owns none of 50 keys")
	}
	nodes[1].Stop(false) // dies; its Lease stays until it expires
	local, fallback := &pushes{}, &pushes{}
	sink := &Sink{Node: nodes[0], Local: local, Fallback: fallback, Timeout: 500 * time.Millisecond}
	nn, err := splitKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Webhook(nn, "abc"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := fallback.all(); !slices.Equal(got, []string{k + "@abc"}) {
			return fmt.Errorf("fallback got %v, want the push for %s", got, k)
		}
		return nil
	})
	if got := local.all(); len(got) != 0 {
		t.Fatalf("the non-owner queued %v on its own actors", got)
	}
}
