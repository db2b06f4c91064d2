package pipeline

// The steps of this file decide whether a sync may apply at all and what
// "done" means: a monorepo commit that changes nothing this repository
// builds from is only recorded (skipUnrelated), a repository waits for the
// ones it depends on (dependencies), and with spec.wait the applied
// objects must become healthy (await).

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// refsNotBefore is how fresh a ref listing of the same remote must be to
// answer this sync. Timer syncs and pushes accept a listing that another
// repository of the remote started since this one's last fetch and within
// its poll interval, so a monorepo with a hundred GitRepositories is
// listed about once per interval. A push accepts a listing begun after its
// webhook arrived, which shows the pushed commit and is shared by every
// repository that push concerns: one listing per push, not a stale one and
// then another. It also names the commit it expects (Request.Expect),
// which lists again if a listing still lacks it. What a person asked for
// (manual, spec change) always lists afresh.
func (s *syncState) refsNotBefore() time.Time {
	switch s.req.Trigger {
	case actors.TriggerManual, actors.TriggerSpec:
		return time.Time{}
	}
	oldest := s.start.Add(-s.repo.Spec.PollInterval())
	if s.mem.LastFetch.After(oldest) {
		oldest = s.mem.LastFetch
	}
	// A push's listing must have begun after its webhook arrived: fresh
	// enough to show the pushed commit, and shared by every repository of
	// the source that the same push concerns. Never older than the rule
	// above, which a retry of an old push still needs.
	if s.req.HeardAt.After(oldest) {
		return s.req.HeardAt
	}
	return oldest
}

// QuietPoll answers a poll from memory when the steps up to skipUnchanged
// would end it there: the status says Synced at this generation and at
// the commit that a ref listing, fresh enough for this poll, still shows
// and that the source holds checked out for this repository. Nothing is
// read from the API server: the status is the one the actor holds, and
// the credentials those of the last fetch, answered for only while the
// pipeline would itself still use its cached copy of spec.secretRef.
// The poll is counted, and its time noted for the next one's freshness,
// as the pipeline would.
func (p *Pipeline) QuietPoll(repo *v1alpha1.GitRepository, mem actors.Memory) (actors.Memory, bool) {
	start := time.Now()
	if ref := repo.Spec.SecretRef; ref != nil && (p.Secrets == nil || !p.Secrets.Cached(repo.Namespace, ref.Name)) {
		return mem, false
	}
	s := syncState{p: p, repo: repo, req: actors.SyncRequest{Trigger: actors.TriggerPoll}, mem: mem, start: start}
	if commit, ok := p.Source.Unmoved(s.request()); !ok || !syncedAt(s.status(), commit, repo.Generation) {
		return mem, false
	}
	mem.LastFetch = start
	p.Metrics.Sync(string(actors.TriggerPoll), effects[Unchanged].metric, time.Since(start))
	return mem, true
}

// skipUnrelated records as seen a new commit that changes no file the
// cluster's objects were built from: nothing under spec.path, none of the
// files outside it that the last build read. No apply, Event or CDEvent;
// the status moves to the new commit and says nothing else.
func skipUnrelated(ctx context.Context, s *syncState) *Outcome {
	st, f := s.status(), s.fetch
	known := s.mem.Inputs != nil && s.mem.Commit != "" && f.Previous == s.mem.Commit &&
		s.mem.Generation == s.repo.Generation
	synced := st.Phase == v1alpha1.PhaseSynced && st.LastSyncedCommit == s.mem.Commit &&
		st.ObservedGeneration == s.repo.Generation
	if f.Unchanged || !known || !synced || s.manual() || k8s.InputsChanged(f.ChangedPaths, s.repo.Spec.Path, s.mem.Inputs) {
		return nil
	}
	s.remember(ctx, f.Commit, s.mem.Hashes, s.mem.Inputs)
	return &Outcome{Kind: Unrelated, Message: fmt.Sprintf("commit %s changes no file this repository builds from", short(f.Commit))}
}

// unrelatedStatus records a commit that skipUnrelated let pass.
func unrelatedStatus(s *syncState, _ *Outcome, st *v1alpha1.GitRepositoryStatus) {
	st.LastSyncedCommit = s.fetch.Commit
	st.LastSyncedShortCommit = short(s.fetch.Commit)
	st.LastAttemptedCommit = s.fetch.Commit
}

// dependencies holds the sync back until every GitRepository of
// spec.dependsOn is Ready at its latest commit, and refuses a cycle.
func dependencies(ctx context.Context, s *syncState) *Outcome {
	keys := s.repo.DependencyKeys()
	if len(keys) == 0 {
		return nil
	}
	self := s.repo.Key()
	seen := map[string]*v1alpha1.GitRepository{self: s.repo}
	errs := map[string]error{}
	get := func(key string) *v1alpha1.GitRepository {
		if r, ok := seen[key]; ok {
			return r
		}
		r, err := s.getRepository(ctx, key)
		seen[key], errs[key] = r, err
		return r
	}
	deps := func(key string) []string {
		if r := get(key); r != nil {
			return r.DependencyKeys()
		}
		return nil
	}
	if cycle := v1alpha1.FindCycle(self, deps); cycle != nil {
		return &Outcome{Kind: Refused, Reason: "DependencyCycle",
			Message: fmt.Sprintf("spec.dependsOn forms a cycle: %s; remove one of these dependencies.", v1alpha1.CyclePath(cycle))}
	}
	for _, key := range keys {
		dep := get(key)
		if err := errs[key]; err != nil {
			return kubeFailed("DependencyCheckFailed", fmt.Errorf("spec.dependsOn: %w", err))
		}
		why := "does not exist"
		if dep != nil {
			var ready bool
			if ready, why = v1alpha1.DependencyReady(dep); ready {
				continue
			}
		}
		return &Outcome{Kind: Waiting, Reason: "DependencyNotReady", Message: fmt.Sprintf("Waiting for %s, which %s.", key, why)}
	}
	return nil
}

// getRepository reads a GitRepository by key; nil when it does not exist.
func (s *syncState) getRepository(ctx context.Context, key string) (*v1alpha1.GitRepository, error) {
	ns, name := splitKey(key)
	r, err := s.p.Status.Get(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return r, err
}

func splitKey(key string) (namespace, name string) {
	namespace, name, _ = strings.Cut(key, "/")
	return namespace, name
}

// waitingStatus says which dependency the repository waits for.
func waitingStatus(s *syncState, o *Outcome, st *v1alpha1.GitRepositoryStatus) {
	st.Phase = v1alpha1.PhasePending
	st.Message = o.Message
	setCondition(st, v1alpha1.ConditionReady, false, o.Reason, o.Message, s.repo.Generation)
	dropCondition(st, v1alpha1.ConditionReconciling)
	dropCondition(st, v1alpha1.ConditionStalled)
}

// await waits, with spec.wait, until every applied object is healthy
// (kstatus Current), within what is left of spec.timeout.
func await(ctx context.Context, s *syncState) *Outcome {
	res := s.result
	if !s.repo.Spec.Wait || len(s.parseErrs) > 0 || len(res.Failed) > 0 {
		return nil
	}
	commit := short(s.fetch.Commit)
	waiting := func(bad []k8s.Unhealthy) {
		_ = s.writeStatus(ctx, func(st *v1alpha1.GitRepositoryStatus) {
			st.Message = fmt.Sprintf("Applied commit %s; waiting for %d object(s) to become healthy: %s.", commit, len(bad), k8s.HealthMessage(bad))
			setCondition(st, v1alpha1.ConditionReconciling, true, "Progressing", st.Message, s.repo.Generation)
		})
	}
	bad, err := s.p.Applier.WaitHealthy(ctx, res.Inventory, s.options(), waiting)
	if err == nil && len(bad) == 0 {
		s.healthy = true
		return nil
	}
	o := &Outcome{Kind: Failed, Reason: "Unhealthy", Inventory: res.Inventory, Result: &res}
	if err != nil {
		o.Err, o.APIDown = err, apiUnreachable(err)
		o.Message = fmt.Sprintf("Commit %s: applied, but its health could not be checked: %v.", commit, err)
		return o
	}
	o.Message = fmt.Sprintf("Commit %s: applied, but %d object(s) not healthy within %s: %s; the sync is retried and waits again.",
		commit, len(bad), s.repo.Spec.SyncTimeout(), k8s.HealthMessage(bad))
	o.Problems = []string{k8s.HealthMessage(bad)}
	return o
}
