package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestGitRefPrecedence(t *testing.T) {
	tests := []struct {
		name string
		spec GitRepositorySpec
		want Ref
	}{
		{"default branch", GitRepositorySpec{}, Ref{Branch: "main"}},
		{"branch", GitRepositorySpec{Branch: "dev"}, Ref{Branch: "dev"}},
		{"tag beats branch", GitRepositorySpec{Branch: "dev", Tag: "v1"}, Ref{Tag: "v1"}},
		{"commit beats tag", GitRepositorySpec{Branch: "dev", Tag: "v1", Commit: "abc1234"}, Ref{Branch: "dev", Commit: "abc1234"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.spec.GitRef(); got != tt.want {
				t.Fatalf("GitRef() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	off := false
	var s GitRepositorySpec
	if !s.PruneEnabled() || s.DriftMode() != DriftCorrect {
		t.Fatalf("zero spec: prune %v drift %q", s.PruneEnabled(), s.DriftMode())
	}
	if s.PollInterval() != 5*time.Minute || s.DriftInterval() != 10*time.Minute || s.SyncTimeout() != 3*time.Minute {
		t.Fatalf("zero spec durations: %v %v %v", s.PollInterval(), s.DriftInterval(), s.SyncTimeout())
	}
	s = GitRepositorySpec{Prune: &off, Drift: DriftDetect, Interval: metav1.Duration{Duration: time.Second}}
	if s.PruneEnabled() || s.DriftMode() != DriftDetect || s.PollInterval() != time.Second {
		t.Fatalf("set spec: prune %v drift %q interval %v", s.PruneEnabled(), s.DriftMode(), s.PollInterval())
	}
}
