package cluster

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestSlowLeaseRenewsPaceTheMember: a member's Lease renews go to the real
// API server through a client that can hold them. Answered at once, they
// tell Pace "quick"; held, they tell it "slow" each half renew period they
// wait, long before the member would fence itself; answered again, quick.
func TestSlowLeaseRenewsPaceTheMember(t *testing.T) {
	ns := env.Namespace(t)
	var hold atomic.Pointer[chan struct{}]
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if gate := hold.Load(); gate != nil && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/leases/") {
				select {
				case <-*gate:
				case <-r.Context().Done():
					return nil, r.Context().Err()
				}
			}
			return rt.RoundTrip(r)
		})
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	paces := make(chan bool, 1000)
	node, err := Start(actor.NewActorSystem(actor.WithLoggerFactory(quietLogger)), Config{
		Name: "c", Host: "127.0.0.1",
		Handler: func(string, *structpb.Struct) (*structpb.Struct, error) { return &structpb.Struct{}, nil },
		Lease: LeaseConfig{Client: kube, Namespace: ns, Member: "m0", Duration: 10 * testRenew, RenewEvery: testRenew,
			Pace: func(slow bool) {
				select {
				case paces <- slow:
				default:
				}
			}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Stop(false) })

	next := func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case slow := <-paces:
				if slow == want {
					return
				}
			case <-deadline:
				t.Fatalf("Pace did not hear slow=%v within %s", want, within)
			}
		}
	}
	next(false, 5*time.Second)

	gate := make(chan struct{})
	hold.Store(&gate)
	next(true, 2*testRenew) // at most one renew period to start, then half of one
	next(true, testRenew)   // and again while the same renew still waits
	hold.Store(nil)
	close(gate)
	for len(paces) > 0 {
		<-paces
	}
	next(false, 5*time.Second)
	if !node.provider.Fresh() {
		t.Fatal("the member lost its Lease while its renews were held for a renew period")
	}
}
