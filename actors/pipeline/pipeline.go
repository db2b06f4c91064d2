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
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
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
	// Slots bounds how many syncs run at once (nil: unbounded). Ten
	// thousand actors start at once; their first syncs queue here rather
	// than all hitting git and the API server together.
	Slots chan struct{}
	// WebhookRetries bounds how often a fetch is retried when a webhook named
	// a commit the remote does not show yet (replication lag at the host).
	WebhookRetries int
}

var _ actors.Syncer = (*Pipeline)(nil)

// errSyncFailed marks a sync that ran to the end but did not apply
// everything: the status already says why.
var errSyncFailed = errors.New("sync failed")

// Sync runs one sync of repo for req.
func (p *Pipeline) Sync(ctx context.Context, repo *v1alpha1.GitRepository, req actors.SyncRequest) error {
	if p.Slots != nil {
		select {
		case p.Slots <- struct{}{}:
			defer func() { <-p.Slots }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, repo.Spec.SyncTimeout())
	defer cancel()
	s := &run{p: p, repo: repo.DeepCopy(), req: req, start: time.Now()}
	s.log = p.Logger.With(zap.String("repository", repo.Key()), zap.String("trigger", string(req.Trigger)))
	result, err := s.sync(ctx)
	p.Metrics.Sync(string(req.Trigger), result, time.Since(s.start))
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
}

// sync returns the metric result ("success", "failure", "unchanged",
// "drift") and the error the actor retries on.
func (s *run) sync(ctx context.Context) (string, error) {
	if s.repo.Status.Phase == "" {
		st := s.repo.Status
		st.Phase = v1alpha1.PhasePending
		st.Message = "Waiting for the first sync."
		s.writeStatus(ctx, st)
	}
	if err := s.fetchSource(ctx); err != nil {
		return "failure", s.fail(ctx, "FetchFailed", err.Error())
	}
	s.log = s.log.With(zap.String("commit", s.fetch.Commit))
	if s.upToDate() {
		if s.req.Trigger == actors.TriggerReconcile {
			return "drift", s.driftCheck(ctx)
		}
		s.log.Debug("unchanged: nothing to apply")
		return "unchanged", nil
	}
	return s.apply(ctx)
}

// upToDate reports whether the cluster already holds this commit for this
// generation, so a poll has nothing to do.
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
	auth, err := s.auth(ctx)
	if err != nil {
		return err
	}
	spec := s.repo.Spec
	ref := spec.GitRef()
	req := gitsrc.Request{Key: s.repo.Key(), URL: spec.URL, Path: spec.Path, Auth: auth,
		Ref: gitsrc.Ref{Branch: ref.Branch, Tag: ref.Tag, Commit: ref.Commit}}
	delay := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		start := time.Now()
		s.fetch, err = s.p.Fetcher.Fetch(ctx, req)
		outcome := map[bool]string{true: "unchanged", false: "fetched"}[s.fetch.Unchanged]
		if err != nil {
			outcome = "error"
		}
		s.p.Metrics.Fetch(outcome, time.Since(start))
		if err != nil {
			if ref := spec.SecretRef; ref != nil {
				s.p.Secrets.Forget(s.repo.Namespace, ref.Name) // it may have been rotated
			}
			return fmt.Errorf("fetch %s: %w", ref, err)
		}
		if !s.fetch.Unchanged {
			s.emit(cdevents.RepositoryFetched, 0, 0, 0, "")
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
	fresh, err := s.p.Status.Get(ctx, s.repo.Namespace, s.repo.Name)
	if err != nil {
		return "failure", err
	}
	// The actor's copy may predate our last status write; the inventory that
	// pruning trusts must be the one in the API server.
	s.repo.Status = fresh.Status
	s.repo.ResourceVersion = fresh.ResourceVersion

	st := s.repo.Status
	st.Phase = v1alpha1.PhaseSyncing
	st.LastAttemptedCommit = s.fetch.Commit
	st.Message = fmt.Sprintf("Applying commit %s.", short(s.fetch.Commit))
	setCondition(&st, v1alpha1.ConditionReconciling, true, "Progressing", st.Message, s.repo.Generation)
	s.writeStatus(ctx, st)

	objs, parseErrs, prevHashes := s.manifests(ctx)
	s.emit(cdevents.DeploymentStarted, 0, 0, 0, "")
	opts := k8s.Options{
		Owner:           k8s.Owner{Namespace: s.repo.Namespace, Name: s.repo.Name},
		TargetNamespace: s.repo.Spec.TargetNamespace,
		Prune:           s.repo.Spec.PruneEnabled(),
		SkipPrune:       len(parseErrs) > 0,
		Force:           s.repo.Spec.Force,
		Inventory:       s.repo.Status.Inventory,
		Hashes:          prevHashes,
		RolloutRef:      rolloutRef(s.repo),
	}
	res, err := s.p.Applier.Apply(ctx, objs, opts)
	if err != nil {
		return "failure", s.fail(ctx, "ApplyFailed", fmt.Sprintf("apply commit %s: %v", short(s.fetch.Commit), err))
	}
	s.p.Metrics.Objects(len(res.Applied), len(res.Pruned))
	for _, h := range res.HandedOver {
		s.emit(cdevents.Handover, 0, 0, 0, fmt.Sprintf("Deployment %s handed to Rollout %s.", objectName(h.Deployment), h.Rollout))
	}
	s.putCache(ctx, objs, parseErrs, res.Hashes)
	return s.finish(ctx, res, parseErrs)
}

// manifests returns the parsed objects of the fetched commit, from the cache
// when this commit was parsed before, and the hashes of the last apply.
func (s *run) manifests(ctx context.Context) ([]*unstructured.Unstructured, []error, map[string]string) {
	entry, ok, err := s.p.Cache.Get(ctx, s.repo.Key())
	if err != nil {
		s.log.Warn("cache unavailable, parsing again", zap.Error(err))
	}
	var hashes map[string]string
	// Hashes are only trusted for the generation they were computed under:
	// a spec change (targetNamespace, force) may change what is sent.
	if ok && s.repo.Status.ObservedGeneration == s.repo.Generation && s.req.Trigger != actors.TriggerManual {
		hashes = entry.Hashes
	}
	if ok && entry.Commit == s.fetch.Commit && entry.Path == s.fetch.Dir {
		return entry.Manifests, entry.ParseErrors, hashes
	}
	objs, errs := k8s.LoadManifestsIn(s.fetch.Root, s.fetch.Dir)
	return objs, errs, hashes
}

func (s *run) putCache(ctx context.Context, objs []*unstructured.Unstructured, parseErrs []error, hashes map[string]string) {
	err := s.p.Cache.Put(ctx, s.repo.Key(), cache.Entry{Commit: s.fetch.Commit, Path: s.fetch.Dir,
		Manifests: objs, ParseErrors: parseErrs, Hashes: hashes})
	if err != nil {
		s.log.Warn("cache put failed", zap.Error(err))
	}
}

// finish writes the outcome of an apply to the status and reports it.
func (s *run) finish(ctx context.Context, res k8s.Result, parseErrs []error) (string, error) {
	st := s.repo.Status
	st.Inventory = res.Inventory
	st.ObservedGeneration = s.repo.Generation
	if s.req.RequestedAt != "" {
		st.LastHandledRequestedAt = s.req.RequestedAt
	}
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
	if len(problems) > 0 {
		st.Phase = v1alpha1.PhaseFailed
		st.Message = failureMessage(s.fetch.Commit, problems)
		if len(parseErrs) > 0 {
			st.Message += " Nothing was pruned."
		}
		setCondition(&st, v1alpha1.ConditionReady, false, "SyncFailed", st.Message, s.repo.Generation)
		setCondition(&st, v1alpha1.ConditionStalled, true, "InvalidManifests", st.Message, s.repo.Generation)
		removeCondition(&st, v1alpha1.ConditionReconciling)
		s.writeStatus(ctx, st)
		s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, "SyncFailed", st.Message)
		s.emit(cdevents.DeploymentFailed, len(res.Applied), len(res.Pruned), len(problems), st.Message)
		s.log.Warn("sync failed", zap.Strings("problems", problems), zap.String("counts", counts))
		return "failure", fmt.Errorf("%w: %s", errSyncFailed, st.Message)
	}
	now := metaNow()
	st.Phase = v1alpha1.PhaseSynced
	st.LastSyncedCommit = s.fetch.Commit
	st.LastSyncedShortCommit = short(s.fetch.Commit)
	st.LastSyncTime = &now
	st.Message = fmt.Sprintf("Applied commit %s: %s.", short(s.fetch.Commit), counts)
	setCondition(&st, v1alpha1.ConditionReady, true, "Synced", st.Message, s.repo.Generation)
	removeCondition(&st, v1alpha1.ConditionStalled)
	removeCondition(&st, v1alpha1.ConditionReconciling)
	s.writeStatus(ctx, st)
	s.p.Recorder.Event(s.repo, corev1.EventTypeNormal, "Synced", st.Message)
	s.emit(cdevents.DeploymentFinished, len(res.Applied), len(res.Pruned), 0, st.Message)
	s.log.Info("synced", zap.String("counts", counts), zap.Duration("took", time.Since(s.start)))
	return "success", nil
}

// fail records a sync that stopped before applying anything.
func (s *run) fail(ctx context.Context, reason, msg string) error {
	st := s.repo.Status
	st.Phase = v1alpha1.PhaseFailed
	if s.fetch.Commit != "" {
		st.LastAttemptedCommit = s.fetch.Commit
	}
	st.Message = sentence(msg)
	setCondition(&st, v1alpha1.ConditionReady, false, reason, st.Message, s.repo.Generation)
	setCondition(&st, v1alpha1.ConditionReconciling, true, "RetryingWithBackoff", "Retrying with backoff.", s.repo.Generation)
	s.writeStatus(ctx, st)
	s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, reason, st.Message)
	if reason != "FetchFailed" {
		s.emit(cdevents.DeploymentFailed, 0, 0, 1, st.Message)
	}
	s.log.Warn("sync failed", zap.String("reason", reason), zap.String("message", st.Message))
	return fmt.Errorf("%w: %s", errSyncFailed, st.Message)
}

// writeStatus writes st unless unchanged; a failed write is logged, not
// fatal: the next sync writes again.
func (s *run) writeStatus(ctx context.Context, st v1alpha1.GitRepositoryStatus) {
	if _, err := s.p.Status.Write(ctx, s.repo, st); err != nil {
		s.log.Warn("status write failed", zap.Error(err))
	}
}

func (s *run) emit(kind cdevents.Kind, applied, pruned, failed int, msg string) {
	s.p.Events.Emit(cdevents.Event{Kind: kind, Namespace: s.repo.Namespace, Name: s.repo.Name,
		URL: s.repo.Spec.URL, Commit: s.fetch.Commit, Path: s.repo.Spec.Path, Trigger: string(s.req.Trigger),
		Applied: applied, Pruned: pruned, Failed: failed, Message: msg})
}

// failureMessage makes one actionable sentence out of the problems of a
// sync: the first problem in full, and how many more there are.
func failureMessage(commit string, problems []string) string {
	msg := fmt.Sprintf("Commit %s: %s", short(commit), strings.TrimSuffix(problems[0], "."))
	if n := len(problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more problem(s); see the Events of this GitRepository)", n)
	}
	return msg + "; fix the manifests in git, the other objects were applied."
}

// rolloutRef is the name of the KULTA Rollout that receives Deployments.
func rolloutRef(repo *v1alpha1.GitRepository) string {
	if repo.Spec.RolloutRef == nil {
		return ""
	}
	return repo.Spec.RolloutRef.Name
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
