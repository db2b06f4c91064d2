package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/actors"
	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/gitsrc"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/k8s/sops"
)

// pending says Pending on a repository that has no status yet.
func pending(ctx context.Context, s *syncState) *Outcome {
	if s.status().Phase != "" {
		return nil
	}
	_ = s.writeStatus(ctx, func(st *v1alpha1.GitRepositoryStatus) {
		if st.Phase == "" {
			st.Phase = v1alpha1.PhasePending
			st.Message = "Waiting for the first sync."
		}
	})
	return nil
}

// fetch fetches the ref; when a webhook named a commit that the remote does
// not show yet, it retries briefly before going on with what the remote has
// (the next poll picks the commit up).
func fetch(ctx context.Context, s *syncState) *Outcome {
	req, o := s.gitRequest(ctx)
	if o != nil {
		return o
	}
	ref := s.repo.Spec.GitRef()
	delay := 200 * time.Millisecond
	var err error
	for attempt := 0; ; attempt++ {
		start := time.Now()
		s.fetch, err = s.p.Source.Fetch(ctx, req)
		req.RefsNotBefore = start // a retry wants a listing newer than this one
		if err == nil {
			s.mem.LastFetch = start
		}
		s.p.Metrics.Fetch(fetchOutcome(s.fetch, err), time.Since(start))
		if err != nil {
			if ref := s.repo.Spec.SecretRef; ref != nil {
				s.p.Secrets.Forget(s.repo.Namespace, ref.Name) // it may have been rotated
			}
			return failed("FetchFailed", fmt.Errorf("fetch %s: %w", ref, err))
		}
		if s.req.Commit == "" || s.req.Commit == s.fetch.Commit || attempt >= s.p.WebhookRetries || ref.Commit != "" {
			s.log = s.log.WithLazy(zap.String("commit", s.fetch.Commit))
			return nil
		}
		s.log.Debug("webhook commit not visible yet, retrying", zap.String("webhook_commit", s.req.Commit))
		select {
		case <-ctx.Done():
			return failed("FetchFailed", fmt.Errorf("fetch %s: %w", ref, ctx.Err()))
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// fetched announces a new commit that concerns this repository.
func fetched(_ context.Context, s *syncState) *Outcome {
	if !s.fetch.Unchanged {
		s.emit(cdevents.Event{Kind: cdevents.RepositoryFetched})
	}
	return nil
}

// gitRequest builds the fetch request, with the credentials of
// spec.secretRef.
func (s *syncState) gitRequest(ctx context.Context) (gitsrc.Request, *Outcome) {
	spec := s.repo.Spec
	if strings.HasPrefix(spec.URL, "file://") && !s.p.AllowFileURLs {
		return gitsrc.Request{}, failed("FetchFailed", errors.New("spec.url: file:// repositories are refused because they read the controller's own disk; "+
			"use an https:// or ssh:// URL, or start the controller with --allow-file-urls for local development"))
	}
	var auth *gitsrc.Auth
	if ref := spec.SecretRef; ref != nil {
		data, err := s.p.Secrets.Data(ctx, s.repo.Namespace, ref.Name)
		if err != nil {
			return gitsrc.Request{}, kubeFailed("FetchFailed", fmt.Errorf("spec.secretRef: %w", err))
		}
		if auth, err = gitsrc.AuthFromSecret(s.repo.Namespace+"/"+ref.Name, data); err != nil {
			return gitsrc.Request{}, failed("FetchFailed", err)
		}
	}
	req := s.request()
	req.Auth = auth
	return req, nil
}

// request is the fetch request of this sync, without credentials.
func (s *syncState) request() gitsrc.Request {
	spec := s.repo.Spec
	ref := spec.GitRef()
	return gitsrc.Request{Key: s.repo.Key(), URL: spec.URL, Path: spec.Path,
		Ref:           gitsrc.Ref{Branch: ref.Branch, Tag: ref.Tag, Commit: ref.Commit},
		RefsNotBefore: s.refsNotBefore(), Expect: s.req.Commit, Urgent: s.req.Trigger.Urgent()}
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

// skipUnchanged ends a sync whose commit and generation the cluster already
// holds; a reconcile then checks for drift instead. A manual request always
// applies.
func skipUnchanged(ctx context.Context, s *syncState) *Outcome {
	if !syncedAt(s.status(), s.fetch.Commit, s.repo.Generation) || s.manual() {
		return nil
	}
	if s.req.Trigger == actors.TriggerReconcile {
		return s.runSteps(driftSteps)
	}
	return &Outcome{Kind: Unchanged, Message: "unchanged: nothing to apply"}
}

// syncedAt reports a status that says the cluster holds commit under
// generation: a sync of it has nothing to apply (skipUnchanged, QuietPoll).
func syncedAt(st *v1alpha1.GitRepositoryStatus, commit string, generation int64) bool {
	return st.Phase == v1alpha1.PhaseSynced && st.LastSyncedCommit == commit && st.ObservedGeneration == generation
}

// skipStalled ends a sync whose manifests did not parse at this very commit
// and generation: applying again cannot help until git or the spec
// changes, or a person asks.
func skipStalled(_ context.Context, s *syncState) *Outcome {
	st := s.status()
	stalled := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStalled)
	if st.Phase != v1alpha1.PhaseFailed || stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != reasonInvalidManifests ||
		st.LastAttemptedCommit != s.fetch.Commit || st.ObservedGeneration != s.repo.Generation || s.manual() {
		return nil
	}
	return &Outcome{Kind: Unchanged, Message: "stalled on invalid manifests: waiting for a new commit or spec"}
}

// slot waits for one of the --max-concurrent-syncs slots (req.Slot). The
// steps before it cost a ref listing and a fetch at most, which may wait on
// a slow git host; the steps after it write to the cluster.
func slot(_ context.Context, s *syncState) *Outcome {
	if s.req.Slot == nil {
		return nil
	}
	ctx, err := s.req.Slot()
	if err != nil {
		return &Outcome{Kind: Abandoned, Message: "not started: " + err.Error(), Err: err}
	}
	s.ctx, s.slotted = ctx, true
	return nil
}

// manual reports a request that must apply even an unchanged commit.
func (s *syncState) manual() bool {
	at := s.req.RequestedAt
	return s.req.Trigger == actors.TriggerManual || (at != "" && at != s.status().LastHandledRequestedAt)
}

// readStatus makes sure the status is the API server's: the actor's copy may
// predate our last write, and the inventory that pruning trusts must be the
// one in the API server.
func readStatus(ctx context.Context, s *syncState) *Outcome {
	if err := s.refresh(); err != nil {
		return kubeFailed("ApplyFailed", err)
	}
	// Kept apart from the status: a status write that fails later in this
	// sync drops the Memory's copy, and the informer's copy carries no
	// inventory, so pruning would see an empty one and leak objects.
	s.inventory = s.mem.Status.Inventory
	return nil
}

// announce says an apply begins: Syncing in the status, a deployment
// started CDEvent that opens a run. The status write goes out beside the
// apply (the outcome's write waits for it).
func announce(_ context.Context, s *syncState) *Outcome {
	commit := s.fetch.Commit
	_ = s.writeStatusBeside(func(st *v1alpha1.GitRepositoryStatus) {
		st.Phase = v1alpha1.PhaseSyncing
		st.LastAttemptedCommit = commit
		st.Message = fmt.Sprintf("Applying commit %s.", short(commit))
		setCondition(st, v1alpha1.ConditionReconciling, true, "Progressing", st.Message, s.repo.Generation)
	})
	s.mem.RunID = uuid.NewString()
	s.emit(cdevents.Event{Kind: cdevents.DeploymentStarted})
	return nil
}

// load parses the checkout and chooses the hashes of the last apply that
// this one may trust: those of the same generation (a spec change may
// change what is sent), never for a manual request.
func load(ctx context.Context, s *syncState) *Outcome {
	s.objs, s.parseErrs = s.parse(ctx)
	// A link out of the checkout was removed, so a manifest may be missing:
	// said like a file that does not parse, which also holds back pruning.
	for _, link := range s.fetch.DroppedLinks {
		s.parseErrs = append(s.parseErrs, fmt.Errorf("%s: symbolic link points outside the repository checkout; it was not followed: replace it with the file itself", link))
	}
	if s.mem.Commit != "" && s.mem.Generation == s.repo.Generation && !s.manual() {
		s.hashes = s.mem.Hashes
	}
	return nil
}

// parse loads the checkout, noting in s.inputs what the build read
// outside spec.path.
func (s *syncState) parse(ctx context.Context) ([]*unstructured.Unstructured, []error) {
	var objs []*unstructured.Unstructured
	var errs []error
	if s.p.Load != nil {
		objs, errs, s.inputs = s.p.Load(s.fetch.Root, s.fetch.Dir)
		return objs, errs
	}
	dec, err := s.decryptor(ctx)
	if err != nil {
		return nil, []error{err}
	}
	objs, errs, s.inputs = k8s.LoadManifestsReading(s.fetch.Root, s.fetch.Dir, dec)
	if dec != nil && slices.ContainsFunc(errs, func(err error) bool { return errors.Is(err, k8s.ErrDecryption) }) {
		// The keys may have been rotated since the Secret was read: read it
		// again, once.
		s.p.Secrets.Forget(s.repo.Namespace, s.repo.Spec.Decryption.SecretRef.Name)
		if dec, err = s.decryptor(ctx); err != nil {
			return nil, []error{err}
		}
		objs, errs, s.inputs = k8s.LoadManifestsReading(s.fetch.Root, s.fetch.Dir, dec)
	}
	return objs, errs
}

// decryptor builds the SOPS keys of spec.decryption from its Secret, or
// returns nil when decryption is not set.
func (s *syncState) decryptor(ctx context.Context) (*sops.Decryptor, error) {
	d := s.repo.Spec.Decryption
	if d == nil {
		return nil, nil
	}
	if d.SecretRef == nil || d.SecretRef.Name == "" {
		return nil, errors.New("spec.decryption.secretRef.name is not set; name a Secret with .agekey or .asc keys")
	}
	data, err := s.p.Secrets.Data(ctx, s.repo.Namespace, d.SecretRef.Name)
	if err != nil {
		return nil, fmt.Errorf("spec.decryption.secretRef: %w", err)
	}
	dec, err := sops.New(data)
	if err != nil {
		return nil, fmt.Errorf("spec.decryption.secretRef %s: %w", d.SecretRef.Name, err)
	}
	return dec, nil
}

// apply sends what changed and prunes what left git (never after a parse
// error: a missing object may only be unparsable).
func apply(ctx context.Context, s *syncState) *Outcome {
	opts := s.options()
	opts.SkipPrune = len(s.parseErrs) > 0
	opts.Hashes = s.hashes
	opts.Versions = s.mem.Versions
	res, err := s.p.Applier.Apply(ctx, s.objs, opts)
	s.result = res
	if err != nil {
		// Some objects may have been sent: the old hashes no longer say what
		// the cluster holds, so the next sync sends everything.
		s.remember(ctx, "", nil, nil)
		o := kubeFailed("ApplyFailed", fmt.Errorf("apply commit %s: %w", short(s.fetch.Commit), err))
		// Whatever was applied before the failure is in the inventory: keep
		// it, so that it can be pruned later.
		o.Inventory = res.Inventory
		return o
	}
	for _, h := range res.HandedOver {
		s.emit(cdevents.Event{Kind: cdevents.Handover,
			Message: fmt.Sprintf("Deployment %s handed to Rollout %s.", objectName(h.Deployment), h.Rollout)})
	}
	return nil
}

// options are the apply options of this sync.
func (s *syncState) options() k8s.Options {
	spec := s.repo.Spec
	opts := k8s.Options{
		Owner:           k8s.Owner{Namespace: s.repo.Namespace, Name: s.repo.Name},
		TargetNamespace: spec.TargetNamespace,
		Prune:           spec.PruneEnabled(),
		Force:           spec.Force,
		Inventory:       s.inventory,
		ServiceAccount:  spec.ServiceAccountName,
	}
	if spec.RolloutRef != nil {
		opts.RolloutRef = spec.RolloutRef.Name
	}
	return opts
}

// record keeps the hashes of what was applied, for the next sync, and the
// files the build read when it read them all.
func record(ctx context.Context, s *syncState) *Outcome {
	inputs := s.inputs
	if len(s.parseErrs) > 0 {
		inputs = nil
	}
	s.remember(ctx, s.fetch.Commit, s.result.Hashes, inputs)
	s.mem.Versions = s.result.Versions
	return nil
}

// judge turns the apply's result into its outcome.
func judge(_ context.Context, s *syncState) *Outcome {
	res := s.result
	o := &Outcome{Kind: Applied, Inventory: res.Inventory, Result: &res}
	for _, e := range s.parseErrs {
		o.Problems = append(o.Problems, e.Error())
	}
	for _, e := range res.Failed {
		o.Problems = append(o.Problems, e.Error())
	}
	switch {
	case len(s.parseErrs) > 0:
		o.Kind, o.Reason = Stalled, "SyncFailed"
	case len(o.Problems) > 0:
		o.Kind, o.Reason = Failed, "SyncFailed"
	default:
		o.Reason = "Synced"
		o.Message = fmt.Sprintf("Applied commit %s: %s.", short(s.fetch.Commit), counts(res))
		if s.healthy {
			o.Message += fmt.Sprintf(" All %d object(s) are healthy.", len(res.Inventory))
		}
		return o
	}
	o.Message = failureMessage(s.fetch.Commit, o.Problems, len(s.parseErrs) > 0)
	return o
}

// counts summarises an apply for a message.
func counts(res k8s.Result) string {
	c := fmt.Sprintf("%d applied, %d unchanged, %d pruned", len(res.Applied), len(res.Unchanged), len(res.Pruned))
	if n := len(res.HandedOver); n > 0 {
		c += fmt.Sprintf(", %d handed to a Rollout", n)
	}
	return c
}
