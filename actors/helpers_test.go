package actors

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// call is one Sync the recorder saw.
type call struct {
	key string
	req SyncRequest
	at  time.Time
}

// recorder is a Syncer that records every call, then runs fn when set.
type recorder struct {
	fn    func(ctx context.Context, repo *v1alpha1.GitRepository, req SyncRequest) error
	mu    sync.Mutex
	calls []call
}

// Sync takes the slot first, as the pipeline does before it writes, and
// records the call once it has one.
func (r *recorder) Sync(ctx context.Context, repo *v1alpha1.GitRepository, req SyncRequest, mem Memory) (Memory, error) {
	if req.Slot != nil {
		var err error
		if ctx, err = req.Slot(); err != nil {
			return mem, err
		}
	}
	req.Slot = nil // recorded as data
	r.mu.Lock()
	r.calls = append(r.calls, call{key: repo.Key(), req: req, at: time.Now()})
	r.mu.Unlock()
	if r.fn != nil {
		return mem, r.fn(ctx, repo, req)
	}
	return mem, nil
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// of returns the calls for one repository, in order.
func (r *recorder) of(key string) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.key == key {
			out = append(out, c)
		}
	}
	return out
}

func triggers(calls []call) []Trigger {
	out := make([]Trigger, len(calls))
	for i, c := range calls {
		out[i] = c.req.Trigger
	}
	return out
}

// hookRecorder records restarts per repository.
type hookRecorder struct {
	NopHooks
	mu       sync.Mutex
	restarts map[string][]time.Time
}

func (h *hookRecorder) ActorRestarted(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.restarts == nil {
		h.restarts = map[string][]time.Time{}
	}
	h.restarts[key] = append(h.restarts[key], time.Now())
}

func (h *hookRecorder) of(key string) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.restarts[key]...)
}

// start runs a System for one test and shuts it down after.
func start(t *testing.T, cfg Config) *System {
	t.Helper()
	s := NewSystem(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

// newRepo returns a GitRepository as the API server would hand it over.
func newRepo(ns, name string, gen int64, interval time.Duration) *v1alpha1.GitRepository {
	return &v1alpha1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: gen},
		Spec: v1alpha1.GitRepositorySpec{
			URL:               "https://git.example/" + name + ".git",
			Interval:          metav1.Duration{Duration: interval},
			ReconcileInterval: metav1.Duration{Duration: time.Hour},
		},
	}
}

func status(t *testing.T, s *System, key string) RepoStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Status(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// recvTimeout bounds every wait for something the code under test must do,
// so that a failure fails the test instead of hanging until go test's timeout.
const recvTimeout = 10 * time.Second

// recv returns the next value from ch, failing the test if none arrives
// within recvTimeout; what names the awaited event in the failure.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(recvTimeout):
		t.Fatalf("timed out after %v waiting for %s", recvTimeout, what)
		panic("unreachable")
	}
}

// await blocks a test Syncer until the test closes release, or until the
// sync is cancelled, so that a test failing before its release does not
// leave a sync behind that ignores Shutdown.
func await(ctx context.Context, release <-chan struct{}) error {
	select {
	case <-release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitStatus polls the actor's status until ok accepts it.
func waitStatus(t *testing.T, s *System, key string, what string, ok func(RepoStatus) bool) RepoStatus {
	t.Helper()
	var st RepoStatus
	testenv.Eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		if st, err = s.Status(ctx, key); err != nil {
			return err
		}
		if !ok(st) {
			return fmt.Errorf("%s: status is %+v", what, st)
		}
		return nil
	})
	return st
}

// runInformer runs an informer on the GitRepositories of ns, as
// cmd/alumiini does; stop ends it and waits for its goroutines.
func runInformer(dyn dynamic.Interface, ns string) (informer cache.SharedIndexInformer, stop func()) {
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, ns, nil)
	informer = factory.ForResource(v1alpha1.GitRepositoryResource).Informer()
	done := make(chan struct{})
	factory.Start(done)
	return informer, func() { close(done); factory.Shutdown() }
}

// waitLanes waits until the slot queue holds urgent and timer tickets.
func waitLanes(t *testing.T, s *System, urgent, timer int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		s.slots.mu.Lock()
		u, tm := len(s.slots.urgent), len(s.slots.timer)
		s.slots.mu.Unlock()
		if u != urgent || tm != timer {
			return fmt.Errorf("%d urgent and %d timer tickets queued, want %d and %d", u, tm, urgent, timer)
		}
		return nil
	})
}
