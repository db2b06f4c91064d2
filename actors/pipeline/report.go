package pipeline

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// appliedStatus records an Applied outcome. Ready means applied, and with
// spec.wait also healthy.
func appliedStatus(s *syncState, o *Outcome, st *v1alpha1.GitRepositoryStatus) {
	reason := "Applied"
	if s.healthy {
		reason = "Healthy"
	}
	s.concluded(o, st)
	now := metaNow()
	st.Phase = v1alpha1.PhaseSynced
	st.LastSyncedCommit = s.fetch.Commit
	st.LastSyncedShortCommit = short(s.fetch.Commit)
	st.LastSyncTime = &now
	st.Message = o.Message
	setCondition(st, v1alpha1.ConditionReady, true, reason, o.Message, s.repo.Generation)
	dropCondition(st, v1alpha1.ConditionStalled)
	dropCondition(st, v1alpha1.ConditionReconciling)
	// An apply that skipped no object sent every one (server-side, with
	// force), so the cluster is what git says: the next drift check would
	// find it in sync, and now finds the condition already saying so
	// instead of writing it (one status write per repository after every
	// first sync and spec change).
	if len(s.result.Unchanged) == 0 && s.repo.Spec.DriftMode() != v1alpha1.DriftIgnore {
		setCondition(st, v1alpha1.ConditionDrifted, false, reasonInSync, messageInSync, s.repo.Generation)
	}
}

// The Drifted condition of a cluster that matches git.
const (
	reasonInSync  = "InSync"
	messageInSync = "The cluster matches git."
)

// reasonInvalidManifests is the Stalled condition's reason for manifests
// that do not parse: skipStalled skips only those.
const reasonInvalidManifests = "InvalidManifests"

// failedStatus records a Failed, Stalled or Refused outcome.
func failedStatus(s *syncState, o *Outcome, st *v1alpha1.GitRepositoryStatus) {
	if o.Result != nil {
		s.concluded(o, st) // the apply ran to its end
	} else if o.Inventory != nil {
		st.Inventory = o.Inventory
	}
	st.Phase = v1alpha1.PhaseFailed
	if s.fetch.Commit != "" {
		st.LastAttemptedCommit = s.fetch.Commit
	}
	st.Message = o.Message
	setCondition(st, v1alpha1.ConditionReady, false, o.Reason, o.Message, s.repo.Generation)
	switch {
	case o.Kind == Stalled:
		setCondition(st, v1alpha1.ConditionStalled, true, reasonInvalidManifests, o.Message, s.repo.Generation)
		dropCondition(st, v1alpha1.ConditionReconciling)
	case o.Kind == Refused:
		setCondition(st, v1alpha1.ConditionStalled, true, o.Reason, o.Message, s.repo.Generation)
		dropCondition(st, v1alpha1.ConditionReconciling)
	case o.Result != nil:
		dropCondition(st, v1alpha1.ConditionStalled)
		setCondition(st, v1alpha1.ConditionReconciling, true, "RetryingWithBackoff", "Retrying the objects that failed.", s.repo.Generation)
	default:
		dropCondition(st, v1alpha1.ConditionStalled)
		setCondition(st, v1alpha1.ConditionReconciling, true, "RetryingWithBackoff", "Retrying with backoff.", s.repo.Generation)
	}
}

// concluded records what every apply that ran to its end records.
func (s *syncState) concluded(o *Outcome, st *v1alpha1.GitRepositoryStatus) {
	st.Inventory = o.Inventory
	st.ObservedGeneration = s.repo.Generation
	if s.req.RequestedAt != "" {
		st.LastHandledRequestedAt = s.req.RequestedAt
	}
}

// driftStatus records a drift check in the Drifted condition only.
func driftStatus(drifted bool) func(*syncState, *Outcome, *v1alpha1.GitRepositoryStatus) {
	return func(s *syncState, o *Outcome, st *v1alpha1.GitRepositoryStatus) {
		setCondition(st, v1alpha1.ConditionDrifted, drifted, o.Reason, o.Message, s.repo.Generation)
	}
}

// emit sends a CDEvent about this sync; ev carries the kind and outcome.
func (s *syncState) emit(ev cdevents.Event) {
	ev.Namespace, ev.Name = s.repo.Namespace, s.repo.Name
	ev.URL, ev.Commit, ev.Path = redactURL(s.repo.Spec.URL), s.fetch.Commit, s.repo.Spec.Path
	ev.Trigger = string(s.req.Trigger)
	if ev.Kind == cdevents.DeploymentStarted {
		ev.RunID = s.mem.RunID
	}
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

// names lists objects for a message, at most five.
func names(lists ...[]v1alpha1.ObjectRef) string {
	var out []string
	for _, l := range lists {
		for _, r := range l {
			out = append(out, fmt.Sprintf("%s %s", r.Kind, objectName(r)))
		}
	}
	if len(out) > 5 {
		return fmt.Sprintf("%v and %d more", out[:5], len(out)-5)
	}
	return fmt.Sprintf("%v", out)
}

func objectName(r v1alpha1.ObjectRef) string {
	if r.Namespace == "" {
		return r.Name
	}
	return r.Namespace + "/" + r.Name
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
