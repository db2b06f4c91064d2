package cluster

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/false-systems/alumiini/test/testenv"
)

// cuttableProxy forwards TCP to the API server until Cut closes the
// listener and every connection: a member behind it loses the API server
// while its member traffic keeps flowing.
type cuttableProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln}
	go p.serve(target)
	t.Cleanup(p.Cut)
	return p
}

func (p *cuttableProxy) serve(target string) {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

// Cut stops forwarding; new connections are refused.
func (p *cuttableProxy) Cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestMemberCutFromTheAPIServerStopsOwningAndIsTakenOver: a member whose
// API connection is cut fences itself (owns nothing) before the others
// drop it, and then the others own every repository between them.
func TestMemberCutFromTheAPIServerStopsOwningAndIsTakenOver(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startMembers(t, ns, 2)
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCuttableProxy(t, u.Host)
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + proxy.ln.Addr().String()
	cfg.Timeout = testRenew
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cut, err := Start(actor.NewActorSystem(actor.WithLoggerFactory(quietLogger)), Config{
		Name: "c", Host: "127.0.0.1",
		Lease:   LeaseConfig{Client: client, Namespace: ns, Member: "cut", Duration: testTimeout, RenewEvery: testRenew},
		Handler: func(string, *structpb.Struct) (*structpb.Struct, error) { return &structpb.Struct{}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cut.Stop(false) })
	all := append(nodes, cut)
	waitMembers(t, all, 3, 10*time.Second)
	ks := keys(300)
	var before map[string]*Node
	testenv.Eventually(t, 5*time.Second, func() (err error) { before, err = owners(all, ks); return err })
	if countOf(before, cut) == 0 {
		t.Fatal("the member to be cut owns nothing; the test would prove nothing")
	}

	proxy.Cut()
	cutAt := time.Now()
	select {
	case <-cut.Lost():
	case <-time.After(testTimeout):
		t.Fatalf("a member cut from the API server still owns repositories after the membership timeout %s", testTimeout)
	}
	fenced := time.Since(cutAt)
	if !allSee(nodes, 3) {
		t.Fatalf("the others dropped the cut member before it fenced itself (%s after the cut)", fenced)
	}
	testenv.Eventually(t, 2*testTimeout, func() error {
		_, err := owners(nodes, ks)
		return err
	})
	t.Logf("cut member fenced after %s; the others own all %d of its repositories %s after the cut", fenced, countOf(before, cut), time.Since(cutAt))
	if got := countOf(mustOwners(t, all, ks), cut); got != 0 {
		t.Fatalf("the cut member owns %d repositories", got)
	}
}

func mustOwners(t *testing.T, nodes []*Node, ks []string) map[string]*Node {
	t.Helper()
	o, err := owners(nodes, ks)
	if err != nil {
		t.Fatal(fmt.Errorf("after the takeover: %w", err))
	}
	return o
}
