package v1alpha1

import (
	"fmt"
	"time"
)

// Ref is the git reference a spec asks for, after precedence
// (commit > tag > branch) and defaulting.
type Ref struct {
	Branch string
	Tag    string
	Commit string
}

// String names the reference for logs and messages.
func (r Ref) String() string {
	switch {
	case r.Commit != "":
		return "commit " + r.Commit
	case r.Tag != "":
		return "tag " + r.Tag
	default:
		return "branch " + r.Branch
	}
}

// GitRef returns the reference to fetch.
func (s *GitRepositorySpec) GitRef() Ref {
	switch {
	case s.Commit != "":
		return Ref{Branch: s.Branch, Commit: s.Commit}
	case s.Tag != "":
		return Ref{Tag: s.Tag}
	case s.Branch != "":
		return Ref{Branch: s.Branch}
	default:
		return Ref{Branch: DefaultBranch}
	}
}

// PruneEnabled reports whether objects removed from git are deleted.
func (s *GitRepositorySpec) PruneEnabled() bool { return s.Prune == nil || *s.Prune }

// DriftMode returns the drift mode, defaulted.
func (s *GitRepositorySpec) DriftMode() DriftMode {
	if s.Drift == "" {
		return DriftCorrect
	}
	return s.Drift
}

// PollInterval, DriftInterval and SyncTimeout return the durations of the
// spec, defaulted when unset (zero or negative).
func (s *GitRepositorySpec) PollInterval() time.Duration {
	return orDefault(s.Interval.Duration, DefaultInterval)
}

func (s *GitRepositorySpec) DriftInterval() time.Duration {
	return orDefault(s.ReconcileInterval.Duration, DefaultReconcileInterval)
}

func (s *GitRepositorySpec) SyncTimeout() time.Duration {
	return orDefault(s.Timeout.Duration, DefaultTimeout)
}

func orDefault(d time.Duration, def string) time.Duration {
	if d > 0 {
		return d
	}
	v, err := time.ParseDuration(def)
	if err != nil {
		panic(fmt.Sprintf("v1alpha1: bad default duration %q", def))
	}
	return v
}

// Key is the namespace/name of a GitRepository: the name of its actor and
// the key of its cache entries.
func (g *GitRepository) Key() string { return g.Namespace + "/" + g.Name }
