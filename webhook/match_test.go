package webhook

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func TestNormalizeURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://github.com/org/repo", "github.com/org/repo"},
		{"https://github.com/org/repo.git", "github.com/org/repo"},
		{"https://github.com/org/repo/", "github.com/org/repo"},
		{"https://github.com/org/repo.git/", "github.com/org/repo"},
		{"HTTPS://GitHub.COM/Org/Repo", "github.com/Org/Repo"},
		{"  https://github.com/org/repo  ", "github.com/org/repo"},
		{"https://user:pass@github.com/org/repo", "github.com/org/repo"},
		{"https://github.com:443/org/repo", "github.com/org/repo"},
		{"http://git.example.com:80/org/repo", "git.example.com/org/repo"},
		{"https://git.example.com:8443/org/repo", "git.example.com:8443/org/repo"},
		{"http://git.example.com:443/org/repo", "git.example.com:443/org/repo"},
		{"https://github.com/org/repo?x=1#frag", "github.com/org/repo"},
		{"ssh://git@github.com/org/repo.git", "github.com/org/repo"},
		{"ssh://git@github.com:22/org/repo.git", "github.com/org/repo"},
		{"ssh://git@bitbucket.corp.example:7999/plat/repo.git", "bitbucket.corp.example:7999/plat/repo"},
		{"git+ssh://git@github.com/org/repo", "github.com/org/repo"},
		{"git://github.com/org/repo.git", "github.com/org/repo"},
		{"git@github.com:org/repo.git", "github.com/org/repo"},
		{"git@GitHub.com:/org/repo.git", "github.com/org/repo"},
		{"github.com:org/repo", "github.com/org/repo"},
		{"github.com/org/repo", "github.com/org/repo"},
		{"https://[::1]:8080/org/repo", "[::1]:8080/org/repo"},
		{"ssh://git@[fd00::1]/org/repo", "[fd00::1]/org/repo"},
		{"file:///srv/git/repo.git", "/srv/git/repo"},
		{"https://github.com", "github.com"},
		{"", ""},
		{"   ", ""},
	}
	for _, tt := range tests {
		if got := NormalizeURL(tt.in); got != tt.want {
			t.Errorf("NormalizeURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCandidates(t *testing.T) {
	a := gitRepo("team-a", "config", "git@github.com:false-systems/platform-config.git")
	b := gitRepo("team-b", "config", "https://github.com/False-Systems/platform-config")
	other := gitRepo("team-c", "other", "https://github.com/false-systems/other")
	empty := gitRepo("team-d", "empty", "")
	repos := []*v1alpha1.GitRepository{a, b, other, empty}

	var m matcher
	for range 2 { // the second round answers from memoised keys
		got := m.candidates(repos, []string{"https://github.com/False-Systems/platform-config.git", ""})
		if len(got) != 2 || got[0] != a || got[1] != b {
			t.Errorf("candidates = %v, want team-a/config and team-b/config", keys(got))
		}
	}
	if got := m.candidates(repos, nil); got != nil {
		t.Errorf("candidates without URLs = %v, want none", keys(got))
	}

	// A repository whose URL changed is matched by its new URL, and the
	// memo does not keep growing with URLs no repository uses.
	for i := range 500 {
		a.Spec.URL = fmt.Sprintf("https://github.com/false-systems/renamed-%d", i)
		m.candidates(repos, []string{a.Spec.URL})
	}
	if got := m.candidates(repos, []string{a.Spec.URL}); len(got) != 1 || got[0] != a {
		t.Errorf("candidates after URL change = %v, want team-a/config", keys(got))
	}
	if n := len(m.keys); n > 2*len(repos)+100 {
		t.Errorf("memo holds %d keys for %d repositories", n, len(repos))
	}
}

func TestFollowedRef(t *testing.T) {
	tests := []struct {
		spec v1alpha1.GitRepositorySpec
		want string
	}{
		{v1alpha1.GitRepositorySpec{}, "refs/heads/main"},
		{v1alpha1.GitRepositorySpec{Branch: "release"}, "refs/heads/release"},
		{v1alpha1.GitRepositorySpec{Branch: "release", Tag: "v1"}, "refs/tags/v1"},
		{v1alpha1.GitRepositorySpec{Tag: "v1", Commit: "0d1a26e"}, ""},
	}
	for _, tt := range tests {
		if got := followedRef(&tt.spec); got != tt.want {
			t.Errorf("followedRef(%+v) = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

func gitRepo(namespace, name, url string, edit ...func(*v1alpha1.GitRepositorySpec)) *v1alpha1.GitRepository {
	r := &v1alpha1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       v1alpha1.GitRepositorySpec{URL: url},
	}
	for _, e := range edit {
		e(&r.Spec)
	}
	return r
}

func keys(repos []*v1alpha1.GitRepository) []string {
	var out []string
	for _, r := range repos {
		out = append(out, r.Key())
	}
	return out
}
