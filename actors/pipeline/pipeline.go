// Package pipeline is the sync that every repository actor runs: fetch (or
// skip when unchanged) → parse → apply → prune → status, under the
// repository's timeout, with Kubernetes Events, CDEvents, metrics and logs
// for each step. It implements actors.Syncer and ties together gitsrc, k8s
// and the cache; the actors package itself knows none of them.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/actors/metrics"
	"github.com/false-systems/alumiini/cache"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/gitsrc"
	"github.com/false-systems/alumiini/k8s"
)

// Recorder emits Kubernetes Events on a GitRepository.
type Recorder interface {
	Event(repo *v1alpha1.GitRepository, eventType, reason, message string)
}

// Pipeline runs syncs. One Pipeline serves every repository concurrently; it
// holds no per-repository state of its own (that is in the cache actor and
// in the GitRepository's status).
type Pipeline struct {
	Fetcher  *gitsrc.Fetcher
	Applier  *k8s.Applier
	Status   *k8s.StatusWriter
	Cache    *cache.Client
	Secrets  *k8s.Secrets
	Recorder Recorder
	Events   *cdevents.Emitter
	Metrics  *metrics.Metrics
	Logger   *zap.Logger
	// WebhookRetries bounds how often a fetch is retried when a webhook named
	// a commit the remote does not show yet (replication lag at the host).
	WebhookRetries int
	// AllowFileURLs permits file:// repositories: local development only, as
	// they read the controller's own file system.
	AllowFileURLs bool
	// Fence ends when this replica may no longer write status (it lost the
	// Lease); status writes are detached from a sync's own context, so that
	// a sync that ran out of time can still say so, but never from the
	// fence. Nil means no fence.
	Fence context.Context
}

var _ actors.Syncer = (*Pipeline)(nil)

// errSyncFailed marks a sync that ran to the end but did not apply
// everything: the status already says why.
var errSyncFailed = errors.New("sync failed")

// statusTimeout bounds a status write. Writes use a context detached from
// the sync's, so that a sync that ran out of time can still say so.
const statusTimeout = 10 * time.Second

// Sync runs one sync of repo for req.
func (p *Pipeline) Sync(ctx context.Context, repo *v1alpha1.GitRepository, req actors.SyncRequest) error {
	s := &run{p: p, repo: repo.DeepCopy(), req: req, start: time.Now()}
	s.log = p.Logger.With(zap.String("repository", repo.Key()), zap.String("trigger", string(req.Trigger)))
	entry, ok, err := p.Cache.Get(ctx, repo.Key())
	if err != nil {
		s.log.Warn("cache unavailable", zap.Error(err))
	}
	if ok && entry.UID == repo.UID {
		s.entry = entry
		if entry.Status != nil {
			// What this controller last wrote is what the API server holds:
			// only the leader writes status, and a new leader starts with an
			// empty cache.
			s.repo.Status, s.fresh = *entry.Status.DeepCopy(), true
		}
	}
	result, err := s.sync(ctx)
	p.Metrics.Sync(string(req.Trigger), result, time.Since(s.start))
	if s.fresh || s.entryChanged {
		s.entry.UID = repo.UID
		s.entry.Status = nil
		if s.fresh {
			s.entry.Status = s.repo.Status.DeepCopy()
		}
		if err := p.Cache.Put(context.WithoutCancel(ctx), repo.Key(), s.entry); err != nil {
			s.log.Warn("cache put failed", zap.Error(err))
		}
	}
	return err
}

// run is the state of one sync.
type run struct {
	p     *Pipeline
	repo  *v1alpha1.GitRepository
	req   actors.SyncRequest
	start time.Time
	log   *zap.Logger
	fetch gitsrc.Result
	fresh bool // repo.Status was read from the API server during this sync
	// entry is this repository's cache entry: read at the start of the
	// sync, written back at its end when entryChanged or fresh.
	entry        cache.Entry
	entryChanged bool
}

// sync returns the metric result ("success", "failure", "unchanged",
// "drift") and the error the actor retries on.
func (s *run) sync(ctx context.Context) (string, error) {
	if s.repo.Status.Phase == "" {
		s.update(ctx, func(st *v1alpha1.GitRepositoryStatus) {
			if st.Phase == "" {
				st.Phase = v1alpha1.PhasePending
				st.Message = "Waiting for the first sync."
			}
		})
	}
	if err := s.fetchSource(ctx); err != nil {
		return "failure", s.fail(ctx, "FetchFailed", err.Error(), nil)
	}
	s.log = s.log.With(zap.String("commit", s.fetch.Commit))
	if s.upToDate() {
		if s.req.Trigger == actors.TriggerReconcile {
			return "drift", s.driftCheck(ctx)
		}
		s.log.Debug("unchanged: nothing to apply")
		return "unchanged", nil
	}
	if s.stalled() {
		s.log.Debug("stalled on invalid manifests: waiting for a new commit or spec")
		return "unchanged", nil
	}
	return s.apply(ctx)
}

// stalled reports whether the last sync found manifests that do not parse
// at this very commit and generation: applying again cannot help until git
// or the spec changes, so only a manual request retries.
func (s *run) stalled() bool {
	st := s.repo.Status
	return st.Phase == v1alpha1.PhaseFailed &&
		meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionStalled) &&
		st.LastAttemptedCommit == s.fetch.Commit &&
		st.ObservedGeneration == s.repo.Generation &&
		s.req.Trigger != actors.TriggerManual &&
		(s.req.RequestedAt == "" || s.req.RequestedAt == st.LastHandledRequestedAt)
}

// upToDate reports whether the cluster already holds this commit for this
// generation, so a poll has nothing to do. A manual request always applies.
func (s *run) upToDate() bool {
	st := s.repo.Status
	return st.Phase == v1alpha1.PhaseSynced &&
		st.LastSyncedCommit == s.fetch.Commit &&
		st.ObservedGeneration == s.repo.Generation &&
		(s.req.RequestedAt == "" || s.req.RequestedAt == st.LastHandledRequestedAt) &&
		s.req.Trigger != actors.TriggerManual
}

// fetchSource fetches the ref; when a webhook named a commit that the remote
// does not show yet, it retries briefly before going on with what the remote
// has (the next poll picks the commit up).
func (s *run) fetchSource(ctx context.Context) error {
	spec := s.repo.Spec
	if strings.HasPrefix(spec.URL, "file://") && !s.p.AllowFileURLs {
		return errors.New("spec.url: file:// repositories are refused because they read the controller's own disk; " +
			"use an https:// or ssh:// URL, or start the controller with --allow-file-urls for local development")
	}
	auth, err := s.auth(ctx)
	if err != nil {
		return err
	}
	ref := spec.GitRef()
	req := gitsrc.Request{Key: s.repo.Key(), URL: spec.URL, Path: spec.Path, Auth: auth,
		Ref: gitsrc.Ref{Branch: ref.Branch, Tag: ref.Tag, Commit: ref.Commit}}
	delay := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		start := time.Now()
		s.fetch, err = s.p.Fetcher.Fetch(ctx, req)
		s.p.Metrics.Fetch(fetchOutcome(s.fetch, err), time.Since(start))
		if err != nil {
			if spec.SecretRef != nil {
				s.p.Secrets.Forget(s.repo.Namespace, spec.SecretRef.Name) // it may have been rotated
			}
			return fmt.Errorf("fetch %s: %w", ref, err)
		}
		if !s.fetch.Unchanged {
			s.emit(cdevents.Event{Kind: cdevents.RepositoryFetched})
		}
		if s.req.Commit == "" || s.req.Commit == s.fetch.Commit || attempt >= s.p.WebhookRetries || ref.Commit != "" {
			return nil
		}
		s.log.Debug("webhook commit not visible yet, retrying", zap.String("webhook_commit", s.req.Commit))
		select {
		case <-ctx.Done():
			return fmt.Errorf("fetch %s: %w", ref, ctx.Err())
		case <-time.After(delay):
		}
		delay *= 2
	}
}

func fetchOutcome(res gitsrc.Result, err error) string {
	switch {
	case err != nil:
		return "error"
	case res.Unchanged:
		return "unchanged"
	}
	return "fetched"
}

// auth reads the git credentials of spec.secretRef.
func (s *run) auth(ctx context.Context) (*gitsrc.Auth, error) {
	ref := s.repo.Spec.SecretRef
	if ref == nil {
		return nil, nil
	}
	data, err := s.p.Secrets.Data(ctx, s.repo.Namespace, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("spec.secretRef: %w", err)
	}
	return gitsrc.AuthFromSecret(s.repo.Namespace+"/"+ref.Name, data)
}

// apply parses and applies the fetched commit, prunes, and writes status.
func (s *run) apply(ctx context.Context) (string, error) {
	// The actor's copy may predate our last status write; the inventory
	// that pruning trusts must be the one in the API server.
	if err := s.refresh(ctx); err != nil {
		return "failure", err
	}
	s.update(ctx, func(st *v1alpha1.GitRepositoryStatus) {
		st.Phase = v1alpha1.PhaseSyncing
		st.LastAttemptedCommit = s.fetch.Commit
		st.Message = fmt.Sprintf("Applying commit %s.", short(s.fetch.Commit))
		setCondition(st, v1alpha1.ConditionReconciling, true, "Progressing", st.Message, s.repo.Generation)
	})

	objs, parseErrs, prevHashes := s.manifests(ctx)
	s.emit(cdevents.Event{Kind: cdevents.DeploymentStarted})
	opts := s.options()
	opts.SkipPrune = len(parseErrs) > 0
	opts.Hashes = prevHashes
	res, err := s.p.Applier.Apply(ctx, objs, opts)
	if err != nil {
		// Some objects may have been sent: the old hashes no longer say what
		// the cluster holds, so the next sync sends everything.
		s.entry.Hashes, s.entryChanged = nil, true
		// Whatever was applied before the failure is in res.Inventory: keep
		// it, so that it can be pruned later.
		return "failure", s.fail(ctx, "ApplyFailed", fmt.Sprintf("apply commit %s: %v", short(s.fetch.Commit), err), res.Inventory)
	}
	s.p.Metrics.Objects(len(res.Applied), len(res.Pruned))
	for _, h := range res.HandedOver {
		s.emit(cdevents.Event{Kind: cdevents.Handover,
			Message: fmt.Sprintf("Deployment %s handed to Rollout %s.", objectName(h.Deployment), h.Rollout)})
	}
	s.remember(objs, parseErrs, res.Hashes)
	return s.finish(ctx, res, parseErrs)
}

// options are the apply options every step of this sync shares.
func (s *run) options() k8s.Options {
	spec := s.repo.Spec
	opts := k8s.Options{
		Owner:           k8s.Owner{Namespace: s.repo.Namespace, Name: s.repo.Name},
		TargetNamespace: spec.TargetNamespace,
		Prune:           spec.PruneEnabled(),
		Force:           spec.Force,
		Inventory:       s.repo.Status.Inventory,
		ServiceAccount:  spec.ServiceAccountName,
	}
	if spec.RolloutRef != nil {
		opts.RolloutRef = spec.RolloutRef.Name
	}
	return opts
}

// manifests returns the parsed objects of the fetched commit, from the cache
// when this commit was parsed before, and the hashes of the last apply.
func (s *run) manifests(ctx context.Context) ([]*unstructured.Unstructured, []error, map[string]string) {
	entry := s.entry
	ok := entry.Commit != ""
	var hashes map[string]string
	// Hashes are only trusted for the generation they were computed under
	// (a spec change may change what is sent), and a manual request sends
	// everything again.
	if ok && s.repo.Status.ObservedGeneration == s.repo.Generation && s.req.Trigger != actors.TriggerManual {
		hashes = entry.Hashes
	}
	if ok && entry.Commit == s.fetch.Commit && entry.Path == s.fetch.Dir {
		return entry.Manifests, entry.ParseErrors, hashes
	}
	objs, errs := k8s.LoadManifestsIn(s.fetch.Root, s.fetch.Dir)
	return objs, errs, hashes
}

// remember keeps what this sync parsed and applied for the next one.
func (s *run) remember(objs []*unstructured.Unstructured, parseErrs []error, hashes map[string]string) {
	s.entry = cache.Entry{UID: s.repo.UID, Commit: s.fetch.Commit, Path: s.fetch.Dir, Manifests: objs,
		ParseErrors: parseErrs, Hashes: hashes, Status: s.entry.Status}
	s.entryChanged = true
}

// finish writes the outcome of an apply to the status and reports it.
func (s *run) finish(ctx context.Context, res k8s.Result, parseErrs []error) (string, error) {
	problems := make([]string, 0, len(parseErrs)+len(res.Failed))
	for _, e := range parseErrs {
		problems = append(problems, e.Error())
	}
	for _, e := range res.Failed {
		problems = append(problems, e.Error())
	}
	counts := fmt.Sprintf("%d applied, %d unchanged, %d pruned", len(res.Applied), len(res.Unchanged), len(res.Pruned))
	if n := len(res.HandedOver); n > 0 {
		counts += fmt.Sprintf(", %d handed to a Rollout", n)
	}
	ev := cdevents.Event{Applied: len(res.Applied), Pruned: len(res.Pruned), Failed: len(problems)}
	var msg string
	werr := s.update(ctx, func(st *v1alpha1.GitRepositoryStatus) {
		st.Inventory = res.Inventory
		st.ObservedGeneration = s.repo.Generation
		if s.req.RequestedAt != "" {
			st.LastHandledRequestedAt = s.req.RequestedAt
		}
		if len(problems) > 0 {
			st.Phase = v1alpha1.PhaseFailed
			st.Message = failureMessage(s.fetch.Commit, problems, len(parseErrs) > 0)
			setCondition(st, v1alpha1.ConditionReady, false, "SyncFailed", st.Message, s.repo.Generation)
			if len(parseErrs) > 0 {
				// Retrying cannot help until the manifests change in git.
				setCondition(st, v1alpha1.ConditionStalled, true, "InvalidManifests", st.Message, s.repo.Generation)
				removeCondition(st, v1alpha1.ConditionReconciling)
			} else {
				removeCondition(st, v1alpha1.ConditionStalled)
				setCondition(st, v1alpha1.ConditionReconciling, true, "RetryingWithBackoff", "Retrying the objects that failed.", s.repo.Generation)
			}
		} else {
			now := metaNow()
			st.Phase = v1alpha1.PhaseSynced
			st.LastSyncedCommit = s.fetch.Commit
			st.LastSyncedShortCommit = short(s.fetch.Commit)
			st.LastSyncTime = &now
			st.Message = fmt.Sprintf("Applied commit %s: %s.", short(s.fetch.Commit), counts)
			setCondition(st, v1alpha1.ConditionReady, true, "Synced", st.Message, s.repo.Generation)
			removeCondition(st, v1alpha1.ConditionStalled)
			removeCondition(st, v1alpha1.ConditionReconciling)
		}
		msg = st.Message
	})
	ev.Message = msg
	if len(problems) > 0 {
		s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, "SyncFailed", eventMessage(msg, problems))
		ev.Kind = cdevents.DeploymentFailed
		s.emit(ev)
		s.log.Warn("sync failed", zap.Strings("problems", problems), zap.String("counts", counts))
		return "failure", fmt.Errorf("%w: %s", errSyncFailed, msg)
	}
	if werr != nil {
		// Applied, but the status (and so the inventory) may not say so:
		// retry, which writes it.
		return "failure", fmt.Errorf("applied commit %s but could not record it: %w", short(s.fetch.Commit), werr)
	}
	s.p.Recorder.Event(s.repo, corev1.EventTypeNormal, "Synced", msg)
	ev.Kind = cdevents.DeploymentFinished
	s.emit(ev)
	s.log.Info("synced", zap.String("counts", counts), zap.Duration("took", time.Since(s.start)))
	return "success", nil
}

// fail records a sync that stopped before it could apply everything.
// inventory, when not nil, is what the cut-short apply leaves applied.
func (s *run) fail(ctx context.Context, reason, msg string, inventory []v1alpha1.ObjectRef) error {
	msg = sentence(msg)
	s.update(ctx, func(st *v1alpha1.GitRepositoryStatus) {
		st.Phase = v1alpha1.PhaseFailed
		if s.fetch.Commit != "" {
			st.LastAttemptedCommit = s.fetch.Commit
		}
		if inventory != nil {
			st.Inventory = inventory
		}
		st.Message = msg
		setCondition(st, v1alpha1.ConditionReady, false, reason, msg, s.repo.Generation)
		setCondition(st, v1alpha1.ConditionReconciling, true, "RetryingWithBackoff", "Retrying with backoff.", s.repo.Generation)
		removeCondition(st, v1alpha1.ConditionStalled)
	})
	s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, reason, msg)
	if reason != "FetchFailed" {
		s.emit(cdevents.Event{Kind: cdevents.DeploymentFailed, Failed: 1, Message: msg})
	}
	s.log.Warn("sync failed", zap.String("reason", reason), zap.String("message", msg))
	return fmt.Errorf("%w: %s", errSyncFailed, msg)
}

// refresh reads the GitRepository's status from the API server, once per
// sync.
func (s *run) refresh(ctx context.Context) error {
	if s.fresh {
		return nil
	}
	ctx, cancel := s.statusContext()
	defer cancel()
	cur, err := s.p.Status.Get(ctx, s.repo.Namespace, s.repo.Name)
	if err != nil {
		return err
	}
	s.repo.Status, s.fresh = cur.Status, true
	return nil
}

// update changes the status (as read from the API server) and writes it
// unless unchanged. A failed write is logged, not fatal: the next sync
// writes again.
func (s *run) update(ctx context.Context, change func(st *v1alpha1.GitRepositoryStatus)) error {
	if err := s.refresh(ctx); err != nil {
		s.log.Warn("status not written: cannot read the GitRepository", zap.Error(err))
		return err
	}
	st := s.repo.Status.DeepCopy()
	change(st)
	ctx, cancel := s.statusContext()
	defer cancel()
	if _, err := s.p.Status.Write(ctx, s.repo, *st); err != nil {
		// The write may or may not have landed: read it again next time.
		s.fresh, s.entryChanged = false, true
		s.log.Warn("status write failed", zap.Error(err))
		return err
	}
	return nil
}

// statusContext bounds a status read or write, detached from the sync's
// context but not from the fence.
func (s *run) statusContext() (context.Context, context.CancelFunc) {
	parent := s.p.Fence
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, statusTimeout)
}

// emit sends a CDEvent about this sync; ev carries the kind and outcome.
func (s *run) emit(ev cdevents.Event) {
	ev.Namespace, ev.Name = s.repo.Namespace, s.repo.Name
	ev.URL, ev.Commit, ev.Path = redactURL(s.repo.Spec.URL), s.fetch.Commit, s.repo.Spec.Path
	ev.Trigger = string(s.req.Trigger)
	s.p.Events.Emit(ev)
}

// redactURL drops credentials from a URL before it leaves the controller.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return raw
	}
	u.User = nil
	return u.String()
}

// failureMessage makes one actionable sentence out of the problems of a
// sync: the first problem in full, and how many more there are.
func failureMessage(commit string, problems []string, parseErrors bool) string {
	msg := fmt.Sprintf("Commit %s: %s", short(commit), strings.TrimSuffix(problems[0], "."))
	if n := len(problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more problem(s), listed in the SyncFailed Event)", n)
	}
	if parseErrors {
		return msg + "; fix the manifests in git. The valid objects were applied and nothing was pruned."
	}
	return msg + "; the other objects were applied and the failed ones are retried."
}

// eventMessage lists every problem, bounded: an Event is where the whole
// list of a failed sync can be read.
func eventMessage(msg string, problems []string) string {
	if len(problems) < 2 {
		return msg
	}
	const max = 10
	list := problems
	if len(list) > max {
		list = list[:max]
	}
	out := msg + " Problems: " + strings.Join(list, "; ")
	if len(problems) > max {
		out += fmt.Sprintf("; and %d more", len(problems)-max)
	}
	return out
}

func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

func short(commit string) string {
	if len(commit) > 7 {
		return commit[:7]
	}
	return commit
}
