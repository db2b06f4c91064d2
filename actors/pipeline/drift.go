package pipeline

import (
	"context"
	"fmt"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
)

// driftSteps is the periodic drift check of a repository whose cluster
// holds its commit: it compares that commit's objects with the live cluster
// and, in Correct mode, re-applies what differs or is missing. It changes
// only the Drifted condition.
var driftSteps = []step{
	{"driftEnabled", driftEnabled},   // drift: Ignore checks nothing
	{"drift/slot", slot},             // a --max-concurrent-syncs slot: the check reads (and may write) the cluster
	{"drift/readStatus", readStatus}, // the inventory, which says what this repository owns
	{"driftQuick", driftQuick},       // nothing moved since ALUMIINI's last write or check: in sync
	{"driftLoad", driftLoad},         // parse the checkout at the synced commit
	{"driftCheck", driftCheck},       // compare (and correct) and judge
}

func driftEnabled(_ context.Context, s *syncState) *Outcome {
	if s.repo.Spec.DriftMode() == v1alpha1.DriftIgnore {
		return &Outcome{Kind: DriftSkipped, Message: "drift check skipped: drift is Ignore"}
	}
	return nil
}

// driftQuick ends a check of a repository whose every object is still at
// the resourceVersion recorded after ALUMIINI's own write or last check:
// one list per kind and namespace, no manifest read or parsed. Anything
// else (a moved object, an unknown version, an error) goes on to the full
// check, which says what it found.
func driftQuick(ctx context.Context, s *syncState) *Outcome {
	inv := s.inventory
	if len(inv) == 0 || len(s.mem.Versions) < len(inv) {
		return nil
	}
	opts := s.options()
	if moved, err := s.p.Applier.Moved(ctx, inv, s.mem.Versions, opts); err != nil || moved {
		return nil
	}
	return &Outcome{Kind: DriftInSync, Reason: reasonInSync, Message: messageInSync, Drift: &k8s.DriftResult{}}
}

func driftLoad(ctx context.Context, s *syncState) *Outcome {
	s.objs, s.parseErrs = s.parse(ctx)
	if len(s.parseErrs) > 0 {
		// The last sync failed on them and said so.
		return &Outcome{Kind: DriftSkipped, Message: "drift check skipped: the manifests do not parse"}
	}
	return nil
}

func driftCheck(ctx context.Context, s *syncState) *Outcome {
	mode := s.repo.Spec.DriftMode()
	opts := s.options()
	opts.Versions = s.mem.Versions
	res, err := s.p.Applier.Drift(ctx, s.objs, opts, mode)
	if err == nil {
		s.mem.Versions = res.Versions
	}
	if err != nil {
		err = fmt.Errorf("drift check: %w", err)
		return &Outcome{Kind: DriftFailed, Message: sentence(err.Error()), Err: err, APIDown: apiUnreachable(err)}
	}
	o := &Outcome{Drift: &res}
	found := len(res.Drifted) + len(res.Missing)
	commit := short(s.fetch.Commit)
	switch {
	case found == 0 && len(res.Failed) > 0:
		o.Kind, o.Reason = DriftCheckFailed, "CheckFailed"
		o.Message = fmt.Sprintf("Could not compare %d object(s) with the cluster: %v.", len(res.Failed), res.Failed[0])
	case found == 0:
		o.Kind, o.Reason, o.Message = DriftInSync, reasonInSync, messageInSync
	case mode == v1alpha1.DriftCorrect && len(res.Failed) == 0:
		o.Kind, o.Reason = DriftCorrected, "Corrected"
		o.Message = fmt.Sprintf("Corrected drift of %d object(s) at commit %s: %s.", found, commit, names(res.Drifted, res.Missing))
	default:
		o.Kind, o.Reason = DriftDetected, "DriftDetected"
		o.Message = fmt.Sprintf("%d object(s) differ from commit %s: %s.", found, commit, names(res.Drifted, res.Missing))
		if len(res.Failed) > 0 {
			o.Message += fmt.Sprintf(" %d object(s) could not be checked or corrected: %v.", len(res.Failed), res.Failed[0])
		}
	}
	return o
}
