// Package pipeline is the sync that every repository actor runs, written as
// an ordered list of small steps (see syncSteps and driftSteps) over small
// interfaces: a git Source, an Applier, a StatusWriter, a Recorder of
// Kubernetes Events and an Emitter of CDEvents. Every step either hands on
// to the next or ends the sync with an Outcome; conclude turns that one
// Outcome into the status write, the Event, the CDEvent, the log line and
// the metric. The state between syncs (actors.Memory) belongs to the
// repository actor: it comes in with the job and goes back with the report.
// docs/actors.md lists the steps and the outcome table.
package pipeline

import (
	"context"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/actors/metrics"
	"github.com/false-systems/alumiini/cache"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/gitsrc"
	"github.com/false-systems/alumiini/k8s"
)

// Source fetches a ref into a checkout (gitsrc.Fetcher). Unmoved answers
// from memory, without waiting, that a Fetch of req would find the commit
// it returns already checked out.
type Source interface {
	Fetch(ctx context.Context, req gitsrc.Request) (gitsrc.Result, error)
	Unmoved(req gitsrc.Request) (commit string, ok bool)
}

// Applier applies, prunes and compares objects (k8s.Applier).
type Applier interface {
	Apply(ctx context.Context, objs []*unstructured.Unstructured, opts k8s.Options) (k8s.Result, error)
	Drift(ctx context.Context, objs []*unstructured.Unstructured, opts k8s.Options, mode v1alpha1.DriftMode) (k8s.DriftResult, error)
	WaitHealthy(ctx context.Context, refs []v1alpha1.ObjectRef, opts k8s.Options, waiting func([]k8s.Unhealthy)) ([]k8s.Unhealthy, error)
	Moved(ctx context.Context, refs []v1alpha1.ObjectRef, versions map[string]string, opts k8s.Options) (bool, error)
	Forget(key string) // a removed repository's
}

// StatusWriter reads a GitRepository and writes its status
// (k8s.StatusWriter). Write must not change its arguments.
type StatusWriter interface {
	Get(ctx context.Context, namespace, name string) (*v1alpha1.GitRepository, error)
	Write(ctx context.Context, repo *v1alpha1.GitRepository, status v1alpha1.GitRepositoryStatus) (bool, error)
}

// Credentials reads git credentials Secrets (k8s.Secrets). Cached
// reports whether Data would answer without asking the API server.
type Credentials interface {
	Data(ctx context.Context, namespace, name string) (map[string][]byte, error)
	Cached(namespace, name string) bool
	Forget(namespace, name string)
}

// Recorder emits Kubernetes Events on a GitRepository.
type Recorder interface {
	Event(repo *v1alpha1.GitRepository, eventType, reason, message string)
}

// Emitter sends CDEvents (cdevents.Emitter).
type Emitter interface{ Emit(ev cdevents.Event) }

// HashStore keeps the crash copy of what the cluster holds (cache.Client).
type HashStore interface {
	Get(ctx context.Context, key string) (cache.Entry, bool, error)
	Put(ctx context.Context, key string, e cache.Entry) error
}

// Loader parses the manifests under dir, never reading outside root, and
// lists the files outside dir that it read (nil: unknown).
type Loader func(root, dir string) ([]*unstructured.Unstructured, []error, []string)

// Pipeline runs syncs. One Pipeline serves every repository concurrently
// and holds no per-repository state: that is the actor's Memory.
type Pipeline struct {
	Source   Source
	Applier  Applier
	Status   StatusWriter
	Cache    HashStore
	Secrets  Credentials
	Recorder Recorder
	Events   Emitter
	Metrics  *metrics.Metrics
	Logger   *zap.Logger
	Load     Loader // nil: k8s.LoadManifestsReading
	// WebhookRetries bounds how often a fetch is retried when a webhook named
	// a commit the remote does not show yet (replication lag at the host).
	WebhookRetries int
	// AllowFileURLs permits file:// repositories: local development only, as
	// they read the controller's own file system.
	AllowFileURLs bool
	// StatusGate bounds the status reads and writes in flight from syncs
	// that hold no --max-concurrent-syncs slot yet: a new repository's
	// read and Pending, a failed fetch's Failed. Without it, 3,000 new
	// GitRepositories sent 3,000 reads and 3,000 status applies at once
	// from one client, outside every other bound (docs/cluster.md,
	// "Session 22"). Nil means no bound.
	StatusGate *semaphore.Weighted
	// Fence ends when this replica may no longer write status (it lost the
	// Lease); status writes are detached from a sync's own context, so that
	// a sync that ran out of time can still say so, but never from the
	// fence. Nil means no fence.
	Fence context.Context
}

var (
	_ actors.Syncer      = (*Pipeline)(nil)
	_ actors.QuietPoller = (*Pipeline)(nil)
)

// step is one part of a sync: run returns nil to hand on to the next step,
// or the Outcome that ends the sync. Its time is measured under name
// (alumiini_sync_step_seconds), so that an operator can see where a slow
// sync spends it.
type step struct {
	name string
	run  func(ctx context.Context, s *syncState) *Outcome
}

// syncSteps is the sync, in order.
var syncSteps = []step{
	{"pending", pending},             // a new repository says Pending
	{"fetch", fetch},                 // ls-remote (shared per remote); fetch when the remote moved
	{"skipUnchanged", skipUnchanged}, // the cluster holds this commit and generation (a reconcile runs driftSteps)
	{"skipUnrelated", skipUnrelated}, // the new commit changes no file this repository builds from
	{"fetched", fetched},             // a new commit: repository fetched
	{"dependencies", dependencies},   // spec.dependsOn: wait until each is Ready; refuse a cycle
	{"skipStalled", skipStalled},     // the manifests at this commit and generation do not parse
	{"slot", slot},                   // wait for a --max-concurrent-syncs slot: what follows writes to the cluster
	{"readStatus", readStatus},       // the status (and the inventory pruning trusts) as the API server has it
	{"announce", announce},           // Syncing; deployment started
	{"load", load},                   // parse the checkout; choose the hashes to trust
	{"apply", apply},                 // server-side apply what changed, then prune
	{"record", record},               // hand the hashes and inputs to the Memory and the cache
	{"await", await},                 // spec.wait: until the applied objects are healthy
	{"judge", judge},                 // Applied, Failed or Stalled
}

// syncState is what the steps of one sync share.
type syncState struct {
	ctx   context.Context // of the steps: replaced by the slot's once it is taken
	p     *Pipeline
	repo  *v1alpha1.GitRepository
	req   actors.SyncRequest
	mem   actors.Memory // handed back to the actor at the end
	start time.Time
	log   *zap.Logger

	fetch     gitsrc.Result
	objs      []*unstructured.Unstructured
	parseErrs []error
	inventory []v1alpha1.ObjectRef // as readStatus read it from the API server
	inputs    []string             // files outside spec.path the build read; nil: unknown
	hashes    map[string]string    // of the last apply, trusted for this one
	result    k8s.Result
	healthy   bool // await saw every applied object healthy

	writing *statusWrite // the status write in flight (writeStatusBeside), nil when none
	slotted bool         // the slot step took a slot: status traffic no longer waits for StatusGate
	// stepLists counts the step lists run: skipUnchanged hands a
	// reconcile over to driftSteps, whose steps are timed instead.
	stepLists int
}

// Sync runs one sync of repo for req, starting from mem, and returns the
// Memory for the next sync.
func (p *Pipeline) Sync(ctx context.Context, repo *v1alpha1.GitRepository, req actors.SyncRequest, mem actors.Memory) (actors.Memory, error) {
	s := &syncState{ctx: ctx, p: p, repo: repo, req: req, mem: mem, start: time.Now()}
	// Lazy: most syncs are quiet polls that log nothing, and encoding the
	// fields up front was a tenth of a quiet poll's CPU.
	s.log = p.Logger.WithLazy(zap.String("repository", repo.Key()), zap.String("trigger", string(req.Trigger)))
	if !req.HeardAt.IsZero() && !req.Retry {
		p.Metrics.Step(string(req.Trigger), "queued", s.start.Sub(req.HeardAt)) // the webhook's wait for the actor
	}
	s.recall(ctx)
	o := s.runSteps(syncSteps)
	concluding := time.Now()
	err := s.conclude(s.ctx, o)
	_ = s.settle()
	p.Metrics.Step(string(req.Trigger), "conclude", time.Since(concluding))
	return s.mem, err
}

// runSteps runs steps in order until one ends the sync. Each gets the
// sync's context as it is then: the slot step replaces it.
func (s *syncState) runSteps(steps []step) *Outcome {
	s.stepLists++
	for _, st := range steps {
		lists, start := s.stepLists, time.Now()
		o := st.run(s.ctx, s)
		if s.stepLists == lists { // a step that ran a list of its own is timed by its steps
			s.p.Metrics.Step(string(s.req.Trigger), st.name, time.Since(start))
		}
		if o != nil {
			return o
		}
	}
	return &Outcome{Kind: Unchanged, Message: "nothing to do"}
}

// recall fills an empty Memory (a new or restarted actor) from the cache
// actor's crash copy.
func (s *syncState) recall(ctx context.Context) {
	if s.mem.Commit != "" || s.p.Cache == nil {
		return
	}
	e, ok, err := s.p.Cache.Get(ctx, s.repo.Key())
	if err != nil {
		s.log.Warn("cache unavailable", zap.Error(err))
	}
	if ok && e.UID == s.repo.UID {
		s.mem.Commit, s.mem.Generation, s.mem.Hashes = e.Commit, e.Generation, e.Hashes
	}
}

// remember keeps what the cluster now holds, in the Memory and in the
// cache actor's crash copy (which keeps no inputs: after a restart the
// first new commit applies).
func (s *syncState) remember(ctx context.Context, commit string, hashes map[string]string, inputs []string) {
	s.mem.Commit, s.mem.Generation, s.mem.Hashes, s.mem.Inputs = commit, s.repo.Generation, hashes, inputs
	if hashes == nil {
		s.mem.Versions = nil
	}
	if s.p.Cache == nil {
		return
	}
	e := cache.Entry{UID: s.repo.UID, Commit: commit, Generation: s.repo.Generation, Hashes: hashes}
	if err := s.p.Cache.Put(context.WithoutCancel(ctx), s.repo.Key(), e); err != nil {
		s.log.Warn("cache put failed", zap.Error(err))
	}
}
