package gitserver

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

func TestCloneWithGitCLIAndGoGit(t *testing.T) {
	for _, auth := range []bool{false, true} {
		name := map[bool]string{false: "anonymous", true: "basic-auth"}[auth]
		t.Run(name, func(t *testing.T) {
			var opts []Option
			if auth {
				opts = append(opts, WithBasicAuth("alice", "s3cret"))
			}
			srv := New(t, opts...)
			repo := srv.CreateRepo(t, "apps")
			sha := repo.CommitStrings("first", map[string]string{"deploy/cm.yaml": "kind: ConfigMap\n"})

			cliURL := repo.URL()
			if auth {
				u, _ := url.Parse(cliURL)
				u.User = url.UserPassword("alice", "s3cret")
				cliURL = u.String()
			}
			dst := filepath.Join(t.TempDir(), "cli")
			out, err := exec.Command("git", "clone", "--quiet", cliURL, dst).CombinedOutput()
			if err != nil {
				t.Fatalf("git clone: %v\n%s", err, out)
			}
			assertFile(t, filepath.Join(dst, "deploy", "cm.yaml"), "kind: ConfigMap\n")

			var basic *githttp.BasicAuth
			if auth {
				basic = &githttp.BasicAuth{Username: "alice", Password: "s3cret"}
			}
			dst2 := filepath.Join(t.TempDir(), "gogit")
			cloneOpts := &git.CloneOptions{URL: repo.URL()}
			if basic != nil {
				cloneOpts.Auth = basic
			}
			r, err := git.PlainClone(dst2, false, cloneOpts)
			if err != nil {
				t.Fatalf("go-git clone: %v", err)
			}
			head, err := r.Head()
			if err != nil {
				t.Fatal(err)
			}
			if head.Hash().String() != sha {
				t.Fatalf("go-git HEAD %s, want %s", head.Hash(), sha)
			}
			assertFile(t, filepath.Join(dst2, "deploy", "cm.yaml"), "kind: ConfigMap\n")
			if srv.UploadPacks() < 2 {
				t.Fatalf("upload-pack requests = %d, want at least 2 (two clones)", srv.UploadPacks())
			}
		})
	}
}

// TestServedSinceTimesEachRequest: the requests of a clone made after a
// mark are returned, in order, each with the time its answer took, and
// another repository's are not.
func TestServedSinceTimesEachRequest(t *testing.T) {
	srv := New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "kind: ConfigMap\n"})
	if _, err := git.PlainClone(filepath.Join(t.TempDir(), "before"), false, &git.CloneOptions{URL: repo.URL()}); err != nil {
		t.Fatal(err)
	}
	mark := time.Now()
	if _, err := git.PlainClone(filepath.Join(t.TempDir(), "after"), false, &git.CloneOptions{URL: repo.URL()}); err != nil {
		t.Fatal(err)
	}
	other := srv.CreateRepo(t, "other")
	other.CommitStrings("first", map[string]string{"b.yaml": "kind: ConfigMap\n"})
	if _, err := git.PlainClone(filepath.Join(t.TempDir(), "other"), false, &git.CloneOptions{URL: other.URL()}); err != nil {
		t.Fatal(err)
	}
	served := repo.ServedSince(mark)
	if len(served) != 2 || !strings.HasPrefix(served[0].Request, "GET ") || !strings.HasPrefix(served[1].Request, "POST ") {
		t.Fatalf("served since the mark: %+v, want the second clone's GET info/refs and POST git-upload-pack", served)
	}
	for _, r := range served {
		if r.Start.Before(mark) || r.Took <= 0 {
			t.Errorf("%s: start %v (mark %v), took %v: want after the mark, with a duration", r.Request, r.Start, mark, r.Took)
		}
	}
	if all := len(srv.Requests()); all != 6 {
		t.Errorf("%d requests in all, want 6 (three clones)", all)
	}
}

func TestBasicAuthRefusesWrongPassword(t *testing.T) {
	srv := New(t, WithBasicAuth("alice", "s3cret"))
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	_, err := git.PlainClone(t.TempDir(), false, &git.CloneOptions{
		URL: repo.URL(), Auth: &githttp.BasicAuth{Username: "alice", Password: "wrong"}})
	if err == nil || !strings.Contains(err.Error(), "authentication required") {
		t.Fatalf("clone with wrong password: err = %v, want authentication required", err)
	}
}

func TestHistoryHelpers(t *testing.T) {
	srv := New(t)
	repo := srv.CreateRepo(t, "apps")
	first := repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	repo.Tag("v1")
	second := repo.CommitStrings("second", map[string]string{"a.yaml": "", "b.yaml": "b: 2\n"})
	if first == second {
		t.Fatal("two commits share a SHA")
	}
	if got := repo.Git("ls-remote", repo.BareDir(), "refs/tags/v1"); !strings.HasPrefix(got, first) {
		t.Fatalf("tag v1 = %q, want %s", got, first)
	}
	repo.ForcePushReset(first)
	if got := repo.Git("ls-remote", repo.BareDir(), "refs/heads/main"); !strings.HasPrefix(got, first) {
		t.Fatalf("main after force push = %q, want %s", got, first)
	}
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s = %q, want %q", path, got, want)
	}
}
