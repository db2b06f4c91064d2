package cluster

import (
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"testing"

	"github.com/asynkron/protoactor-go/cluster"
)

// place counts, for each member address, the keys the engine's rendezvous
// placement gives it, and returns the owner of each key.
func place(addrs []string, ks []string) (map[string]int, map[string]string) {
	var members cluster.Members
	for i, a := range addrs {
		m, err := leaseMember(fakeLease(a, i))
		if err != nil {
			panic(err)
		}
		members = append(members, m)
	}
	rdv := cluster.NewRendezvous()
	rdv.UpdateMembers(members)
	count, owner := map[string]int{}, map[string]string{}
	for _, k := range ks {
		o := rdv.GetByClusterIdentity(cluster.NewClusterIdentity(k, RepositoryKind))
		count[o]++
		owner[k] = o
	}
	return count, owner
}

// TestPlacementSpread: with Pod-like member addresses, the engine's
// placement spreads 300 repositories within ±30% of an even share, and a
// joining fourth member takes roughly a quarter, all from the others.
func TestPlacementSpread(t *testing.T) {
	three := []string{"10.244.0.12:4020", "10.244.1.7:4020", "10.244.2.31:4020"}
	four := append(append([]string{}, three...), "10.244.3.5:4020")
	ks := keys(300)
	for _, tc := range []struct {
		name  string
		addrs []string
	}{{"three members", three}, {"four members", four}} {
		t.Run(tc.name, func(t *testing.T) {
			count, _ := place(tc.addrs, ks)
			even := len(ks) / len(tc.addrs)
			for _, a := range tc.addrs {
				if c := count[a]; c*10 < even*7 || c*10 > even*13 {
					t.Fatalf("%s owns %d of %d, want within ±30%% of %d (all %v)", a, c, len(ks), even, count)
				}
			}
		})
	}
	_, before := place(three, ks)
	_, after := place(four, ks)
	moved := 0
	for _, k := range ks {
		if before[k] != after[k] {
			moved++
			if after[k] != four[3] {
				t.Fatalf("%s moved from %s to %s, not to the joining member", k, before[k], after[k])
			}
		}
	}
	if moved < 52 || moved > 98 {
		t.Fatalf("%d of 300 repositories moved to the fourth member, want about a quarter (52..98)", moved)
	}
}

func fakeLease(addr string, i int) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "l", Annotations: map[string]string{annotAddress: addr, annotKinds: RepositoryKind}},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(fmt.Sprint("member-", i))},
	}
}
