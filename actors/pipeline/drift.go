package pipeline

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/false-systems/alumiini/actors/cdevents"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// driftCheck compares the synced commit's objects with the live cluster and,
// in Correct mode, re-applies what differs or is missing.
func (s *run) driftCheck(ctx context.Context) error {
	mode := s.repo.Spec.DriftMode()
	if mode == v1alpha1.DriftIgnore {
		return nil
	}
	objs, parseErrs, _ := s.manifests(ctx)
	if len(parseErrs) > 0 {
		return nil // the last sync failed on them and said so
	}
	opts := k8s.Options{
		Owner:           k8s.Owner{Namespace: s.repo.Namespace, Name: s.repo.Name},
		TargetNamespace: s.repo.Spec.TargetNamespace,
		Force:           s.repo.Spec.Force,
		Inventory:       s.repo.Status.Inventory,
		RolloutRef:      rolloutRef(s.repo),
	}
	res, err := s.p.Applier.Drift(ctx, objs, opts, mode)
	if err != nil {
		return fmt.Errorf("drift check: %w", err)
	}
	found := len(res.Drifted) + len(res.Missing)
	s.p.Metrics.Drift(found, len(res.Corrected))
	st := s.repo.Status
	switch {
	case found == 0:
		setCondition(&st, v1alpha1.ConditionDrifted, false, "InSync", "The cluster matches git.", s.repo.Generation)
	case mode == v1alpha1.DriftCorrect && len(res.Failed) == 0:
		msg := fmt.Sprintf("Corrected drift of %d object(s) at commit %s.", found, short(s.fetch.Commit))
		setCondition(&st, v1alpha1.ConditionDrifted, false, "Corrected", msg, s.repo.Generation)
		s.p.Recorder.Event(s.repo, corev1.EventTypeNormal, "DriftCorrected", msg+" "+names(res.Drifted, res.Missing))
		s.emitDrift(cdevents.DriftDetected, found, msg)
		s.emitDrift(cdevents.DriftCorrected, found, msg)
	default:
		msg := fmt.Sprintf("%d object(s) differ from commit %s: %s.", found, short(s.fetch.Commit), names(res.Drifted, res.Missing))
		if len(res.Failed) > 0 {
			msg += fmt.Sprintf(" Correcting failed: %v.", res.Failed[0])
		}
		setCondition(&st, v1alpha1.ConditionDrifted, true, "DriftDetected", msg, s.repo.Generation)
		s.p.Recorder.Event(s.repo, corev1.EventTypeWarning, "DriftDetected", msg)
		s.emitDrift(cdevents.DriftDetected, found, msg)
	}
	if found > 0 {
		s.log.Info("drift", zap.Int("found", found), zap.Int("corrected", len(res.Corrected)), zap.String("mode", string(mode)))
	}
	s.writeStatus(ctx, st)
	return nil
}

func (s *run) emitDrift(kind cdevents.Kind, n int, msg string) {
	s.p.Events.Emit(cdevents.Event{Kind: kind, Namespace: s.repo.Namespace, Name: s.repo.Name,
		URL: s.repo.Spec.URL, Commit: s.fetch.Commit, Path: s.repo.Spec.Path, Trigger: string(s.req.Trigger),
		Drifted: n, Message: msg})
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
