package pipeline

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// driftCheck compares the synced commit's objects with the live cluster and,
// in Correct mode, re-applies what differs or is missing. It changes only
// the Drifted condition of the status.
func (s *run) driftCheck(ctx context.Context) error {
	mode := s.repo.Spec.DriftMode()
	if mode == v1alpha1.DriftIgnore {
		return nil
	}
	objs, parseErrs, _ := s.manifests(ctx)
	if len(parseErrs) > 0 {
		return nil // the last sync failed on them and said so
	}
	res, err := s.p.Applier.Drift(ctx, objs, s.options(), mode)
	if err != nil {
		return fmt.Errorf("drift check: %w", err)
	}
	found := len(res.Drifted) + len(res.Missing)
	s.p.Metrics.Drift(found, len(res.Corrected))
	var (
		status      bool
		reason, msg string
	)
	switch {
	case found == 0 && len(res.Failed) > 0:
		status, reason = true, "CheckFailed"
		msg = fmt.Sprintf("Could not compare %d object(s) with the cluster: %v.", len(res.Failed), res.Failed[0])
		s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, "DriftCheckFailed", msg)
	case found == 0:
		reason, msg = "InSync", "The cluster matches git."
	case mode == v1alpha1.DriftCorrect && len(res.Failed) == 0:
		reason = "Corrected"
		msg = fmt.Sprintf("Corrected drift of %d object(s) at commit %s: %s.", found, short(s.fetch.Commit), names(res.Drifted, res.Missing))
		s.p.Recorder.Event(s.repo, corev1.EventTypeNormal, "DriftCorrected", msg)
		s.emit(cdevents.Event{Kind: cdevents.DriftDetected, Drifted: found, Message: msg})
		s.emit(cdevents.Event{Kind: cdevents.DriftCorrected, Drifted: found, Message: msg})
	default:
		status, reason = true, "DriftDetected"
		msg = fmt.Sprintf("%d object(s) differ from commit %s: %s.", found, short(s.fetch.Commit), names(res.Drifted, res.Missing))
		if len(res.Failed) > 0 {
			msg += fmt.Sprintf(" %d object(s) could not be checked or corrected: %v.", len(res.Failed), res.Failed[0])
		}
		s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, "DriftDetected", msg)
		s.emit(cdevents.Event{Kind: cdevents.DriftDetected, Drifted: found, Message: msg})
	}
	if found > 0 || len(res.Failed) > 0 {
		s.log.Info("drift", zap.Int("found", found), zap.Int("corrected", len(res.Corrected)),
			zap.Int("failed", len(res.Failed)), zap.String("mode", string(mode)))
	}
	return s.update(ctx, func(st *v1alpha1.GitRepositoryStatus) {
		setCondition(st, v1alpha1.ConditionDrifted, status, reason, msg, s.repo.Generation)
	})
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
