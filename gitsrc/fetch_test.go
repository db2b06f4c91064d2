package gitsrc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/false-systems/alumiini/test/gitserver"
)

func mustFetch(t *testing.T, f *Fetcher, req Request) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := f.Fetch(ctx, req)
	if err != nil {
		t.Fatalf("fetch %+v: %v", req.Ref, err)
	}
	return res
}

func fetchErr(t *testing.T, f *Fetcher, req Request, wants ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := f.Fetch(ctx, req)
	if err == nil {
		t.Fatalf("fetch %+v succeeded, want an error containing %q", req.Ref, wants)
	}
	t.Log(err)
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("fetch error %q does not contain %q", err, w)
		}
	}
	return err
}

// assertTree checks that dir holds exactly files (path -> content; a
// symlink's content is "-> target", see treeOf).
func assertTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if got := treeOf(t, dir); !reflect.DeepEqual(got, files) {
		t.Fatalf("tree %s = %v, want %v", dir, got, files)
	}
}

func TestFetchOverHTTP(t *testing.T) {
	for _, withAuth := range []bool{false, true} {
		t.Run(map[bool]string{false: "anonymous", true: "basic-auth"}[withAuth], func(t *testing.T) {
			var opts []gitserver.Option
			var auth *Auth
			if withAuth {
				opts = append(opts, gitserver.WithBasicAuth("alice", "s3cret"))
				var err error
				if auth, err = AuthFromSecret("git-creds", map[string][]byte{"username": []byte("alice"), "password": []byte("s3cret")}); err != nil {
					t.Fatal(err)
				}
			}
			srv := gitserver.New(t, opts...)
			repo := srv.CreateRepo(t, "apps")
			first := repo.CommitStrings("first", map[string]string{"deploy/a.yaml": "a: 1\n", "deploy/b.yaml": "b: 1\n", "README": "hi\n"})
			f := NewFetcher(t.TempDir())
			req := Request{Key: "team-a/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: "deploy", Auth: auth}

			res := mustFetch(t, f, req)
			if res.Commit != first || res.Unchanged || res.ChangedPaths != nil {
				t.Fatalf("first fetch = %+v, want commit %s, changed, no previous commit", res, first)
			}
			assertTree(t, res.Dir, map[string]string{"a.yaml": "a: 1\n", "b.yaml": "b: 1\n"})
			if !filepath.IsAbs(res.Dir) || filepath.Base(res.Dir) != "deploy" {
				t.Fatalf("Dir = %s, want an absolute path ending in deploy", res.Dir)
			}
			if res.Dir != filepath.Join(res.Root, "deploy") {
				t.Fatalf("Dir = %s, want deploy under Root %s", res.Dir, res.Root)
			}

			packs, adverts := srv.UploadPacks(), srv.RefAdvertisements()
			res = mustFetch(t, f, req)
			if !res.Unchanged || res.Commit != first || len(res.ChangedPaths) != 0 {
				t.Fatalf("quiet poll = %+v, want unchanged %s", res, first)
			}
			if srv.UploadPacks() != packs || srv.RefAdvertisements() != adverts+1 {
				t.Fatalf("quiet poll made %d upload-pack and %d ref listing requests, want 0 and 1",
					srv.UploadPacks()-packs, srv.RefAdvertisements()-adverts)
			}

			second := repo.CommitStrings("second", map[string]string{"deploy/a.yaml": "a: 2\n", "deploy/b.yaml": ""})
			res = mustFetch(t, f, req)
			if res.Commit != second || res.Unchanged {
				t.Fatalf("fetch after push = %+v, want %s", res, second)
			}
			if want := []string{"deploy/a.yaml", "deploy/b.yaml"}; !reflect.DeepEqual(res.ChangedPaths, want) {
				t.Fatalf("ChangedPaths = %v, want %v", res.ChangedPaths, want)
			}
			assertTree(t, res.Dir, map[string]string{"a.yaml": "a: 2\n"})
		})
	}
}

func TestHTTPCredentialErrors(t *testing.T) {
	srv := gitserver.New(t, gitserver.WithBasicAuth("alice", "s3cret"))
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}

	fetchErr(t, f, req, repo.URL(), "requires authentication", "spec.secretRef")

	wrong, err := AuthFromSecret("git-creds", map[string][]byte{"username": []byte("alice"), "password": []byte("hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	req.Auth = wrong
	err = fetchErr(t, f, req, `refused the credentials in secret "git-creds"`, "username and password")
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}

	// Credentials in the URL are used, and never echoed.
	req.Auth = nil
	req.URL = strings.Replace(repo.URL(), "://", "://alice:hunter2@", 1)
	err = fetchErr(t, f, req, repo.URL()+": the server refused the credentials in spec.url")
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "alice") {
		t.Fatalf("error leaks URL credentials: %v", err)
	}
	req.URL = strings.Replace(repo.URL(), "://", "://alice:s3cret@", 1)
	if res := mustFetch(t, f, req); res.Commit == "" {
		t.Fatal("no commit with credentials in the URL")
	}
}

func TestMissingRefsAndPaths(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	sha := repo.CommitStrings("first", map[string]string{"deploy/a.yaml": "a: 1\n", "file.yaml": "x: 1\n"})
	f := NewFetcher(t.TempDir())
	req := func(ref Ref, path string) Request {
		return Request{Key: "ns/apps", URL: repo.URL(), Ref: ref, Path: path}
	}
	fetchErr(t, f, req(Ref{Branch: "nope"}, ""), `branch "nope" not found in `+repo.URL(), "spec.branch")
	fetchErr(t, f, req(Ref{Tag: "v9"}, ""), `tag "v9" not found`, "spec.tag")
	fetchErr(t, f, req(Ref{Branch: "main"}, "missing"), `spec.path "missing" does not exist in commit `+sha)
	fetchErr(t, f, req(Ref{Branch: "main"}, "file.yaml"), `spec.path "file.yaml" is not a directory`)
	fetchErr(t, f, req(Ref{Commit: strings.Repeat("ab", 20)}, ""), "commit "+strings.Repeat("ab", 20)+" is not in the default branch")
	fetchErr(t, f, Request{Key: "ns/x", URL: srv.BaseURL() + "/nothing.git", Ref: Ref{Branch: "main"}}, "repository not found")
}

func TestForcePushBranchSwitchAndPins(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	v1 := repo.CommitStrings("v1", map[string]string{"app.yaml": "v: 1\n"})
	repo.Tag("v1")
	repo.Git("tag", "-a", "-m", "annotated", "v1-annotated")
	repo.Git("push", "--quiet", "origin", "refs/tags/v1-annotated")
	v2 := repo.CommitStrings("v2", map[string]string{"app.yaml": "v: 2\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}

	res := mustFetch(t, f, req)
	assertTree(t, res.Dir, map[string]string{"app.yaml": "v: 2\n"})

	// Force-push: history rewritten, the old head is gone from the branch.
	repo.ForcePushReset(v1)
	rewritten := repo.CommitStrings("rewritten", map[string]string{"app.yaml": "v: rewritten\n", "new.yaml": "n: 1\n"})
	res = mustFetch(t, f, req)
	if res.Commit != rewritten {
		t.Fatalf("after force-push commit = %s, want %s", res.Commit, rewritten)
	}
	assertTree(t, res.Dir, map[string]string{"app.yaml": "v: rewritten\n", "new.yaml": "n: 1\n"})
	if want := []string{"app.yaml", "new.yaml"}; !reflect.DeepEqual(res.ChangedPaths, want) {
		t.Fatalf("ChangedPaths after force-push = %v, want %v", res.ChangedPaths, want)
	}

	// Branch switch.
	repo.Checkout("dev")
	dev := repo.CommitStrings("dev", map[string]string{"app.yaml": "v: dev\n"})
	req.Ref = Ref{Branch: "dev"}
	if res = mustFetch(t, f, req); res.Commit != dev {
		t.Fatalf("branch dev: commit %s, want %s", res.Commit, dev)
	}
	assertTree(t, res.Dir, map[string]string{"app.yaml": "v: dev\n", "new.yaml": "n: 1\n"})

	// Tag pins, lightweight and annotated, each into a fresh cache (so the
	// tag itself is fetched) and polled again.
	for _, tag := range []string{"v1", "v1-annotated"} {
		tf := NewFetcher(t.TempDir())
		req.Ref = Ref{Tag: tag}
		if res = mustFetch(t, tf, req); res.Commit != v1 {
			t.Fatalf("tag %s: commit %s, want %s", tag, res.Commit, v1)
		}
		assertTree(t, res.Dir, map[string]string{"app.yaml": "v: 1\n"})
		if res = mustFetch(t, tf, req); !res.Unchanged || res.Commit != v1 {
			t.Fatalf("tag %s polled again: %+v, want unchanged %s", tag, res, v1)
		}
	}

	// Commit pin of a commit no branch head points at any more, from a
	// server that refuses unadvertised commits: fetched with the branch's
	// history. v2 was force-pushed away from main, so keep it on a branch.
	repo.Git("push", "--quiet", "origin", v2+":refs/heads/old")
	req.Ref = Ref{Branch: "old", Commit: v1}
	if res = mustFetch(t, f, req); res.Commit != v1 {
		t.Fatalf("commit pin: %s, want %s", res.Commit, v1)
	}
	// Again in a cache that holds only a shallow checkout of branch old.
	fresh := NewFetcher(t.TempDir())
	req.Ref = Ref{Branch: "old"}
	if res = mustFetch(t, fresh, req); res.Commit != v2 {
		t.Fatalf("branch old: %s, want %s", res.Commit, v2)
	}
	req.Ref = Ref{Branch: "old", Commit: v1}
	if res = mustFetch(t, fresh, req); res.Commit != v1 {
		t.Fatalf("commit pin after a shallow fetch: %s, want %s", res.Commit, v1)
	}
	assertTree(t, res.Dir, map[string]string{"app.yaml": "v: 1\n"})
	adverts := srv.RefAdvertisements()
	if res = mustFetch(t, fresh, req); !res.Unchanged || srv.RefAdvertisements() != adverts {
		t.Fatalf("second fetch of a commit pin = %+v with %d requests, want unchanged and no request", res, srv.RefAdvertisements()-adverts)
	}
}

func TestCommitPinFetchedDirectly(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	old := repo.CommitStrings("old", map[string]string{"app.yaml": "v: old\n"})
	repo.CommitStrings("new", map[string]string{"app.yaml": "v: new\n"})
	gitIn(t, repo.BareDir(), "config", "uploadpack.allowReachableSHA1InWant", "true")
	f := NewFetcher(t.TempDir())
	packs := srv.UploadPacks()
	res := mustFetch(t, f, Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Commit: old}})
	if res.Commit != old {
		t.Fatalf("commit %s, want %s", res.Commit, old)
	}
	assertTree(t, res.Dir, map[string]string{"app.yaml": "v: old\n"})
	if got := srv.UploadPacks() - packs; got != 1 {
		t.Fatalf("fetching a pinned commit took %d upload-pack requests, want 1", got)
	}
}

func gitIn(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func TestSymlinksAndPathEscapes(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.Symlink("/etc", "deploy/etc")
	repo.Symlink("../../..", "deploy/up")
	repo.Symlink("a.yaml", "deploy/alias.yaml")
	repo.Symlink("deploy", "inside")
	repo.CommitStrings("links", map[string]string{"deploy/a.yaml": "a: 1\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: "deploy"}

	res := mustFetch(t, f, req)
	// The link into the repository stays; the ones leading out are gone.
	assertTree(t, res.Dir, map[string]string{"a.yaml": "a: 1\n", "alias.yaml": "-> a.yaml"})
	// They are named, so that the sync can say why, on a quiet poll too.
	want := []string{"deploy/etc", "deploy/up"}
	if !reflect.DeepEqual(res.DroppedLinks, want) {
		t.Fatalf("DroppedLinks = %v, want %v", res.DroppedLinks, want)
	}
	if res = mustFetch(t, f, req); !res.Unchanged || !reflect.DeepEqual(res.DroppedLinks, want) {
		t.Fatalf("quiet poll: unchanged %v, DroppedLinks %v, want %v", res.Unchanged, res.DroppedLinks, want)
	}
	req.Path = ""
	if res = mustFetch(t, f, req); !reflect.DeepEqual(res.DroppedLinks, want) {
		t.Fatalf("whole repository: DroppedLinks %v, want %v", res.DroppedLinks, want)
	}

	req.Path = "deploy/etc"
	fetchErr(t, f, req, `spec.path "deploy/etc" goes through symlink "deploy/etc"`, "not followed")
	req.Path = "deploy/up/tmp"
	fetchErr(t, f, req, `goes through symlink "deploy/up"`)
	req.Path = "a/../../x"
	fetchErr(t, f, req, `spec.path "a/../../x" must be relative and stay inside the repository`)
	req.Path = "/etc"
	fetchErr(t, f, req, "must be relative")

	req.Path = "inside"
	if res = mustFetch(t, f, req); filepath.Base(res.Dir) != "deploy" {
		t.Fatalf("path through an inward symlink resolved to %s, want the deploy directory", res.Dir)
	}
}

func TestFileURL(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	sha := repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: "file://" + repo.BareDir(), Ref: Ref{Branch: "main"}}
	if res := mustFetch(t, f, req); res.Commit != sha {
		t.Fatalf("file:// commit %s, want %s", res.Commit, sha)
	}
	if res := mustFetch(t, f, req); !res.Unchanged {
		t.Fatal("second file:// fetch is not unchanged")
	}
}

func TestTimeoutReachesTheTransport(t *testing.T) {
	stall := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stall:
		}
	}))
	defer hung.Close()
	defer close(stall)

	f := NewFetcher(t.TempDir())
	const timeout = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := f.Fetch(ctx, Request{Key: "ns/hung", URL: hung.URL + "/apps.git", Ref: Ref{Branch: "main"}})
	elapsed := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "spec.timeout") {
		t.Fatalf("fetch from a stalled server: %v, want a timeout error", err)
	}
	if elapsed > timeout+time.Second {
		t.Fatalf("fetch returned after %s, want within %s", elapsed, timeout+time.Second)
	}
}

func TestRemoveAndConcurrentKeys(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	sha := repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	cache := t.TempDir()
	f := NewFetcher(cache)

	var wg sync.WaitGroup
	results := make([]Result, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			results[i], errs[i] = f.Fetch(ctx, Request{Key: "ns/app-" + string(rune('a'+i)), URL: repo.URL(), Ref: Ref{Branch: "main"}})
		}()
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i].Commit != sha {
			t.Fatalf("concurrent fetch %d: %+v, %v", i, results[i], errs[i])
		}
	}
	if err := f.Remove("ns/app-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cache, "ns_app-a")); !os.IsNotExist(err) {
		t.Fatalf("checkout still there after Remove: %v", err)
	}
	if _, err := os.Stat(results[1].Dir); err != nil {
		t.Fatalf("Remove of one key touched another: %v", err)
	}
}

func TestObjectStoreStartsAfreshAfterManyPacks(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	f := NewFetcher(t.TempDir())
	f.maxPacks = 2
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}
	var resets int
	for i := range 6 {
		sha := repo.CommitStrings("commit", map[string]string{"a.yaml": strings.Repeat("x", i+1)})
		res := mustFetch(t, f, req)
		if res.Commit != sha {
			t.Fatalf("fetch %d: commit %s, want %s", i, res.Commit, sha)
		}
		assertTree(t, res.Dir, map[string]string{"a.yaml": strings.Repeat("x", i+1)})
		if i > 0 && res.ChangedPaths == nil {
			resets++ // no previous commit to compare with: the store was reset
		}
		packs, _ := filepath.Glob(filepath.Join(f.cacheDir, "sources", "*", "objects", "pack", "*.pack"))
		if len(packs) > f.maxPacks+1 {
			t.Fatalf("after fetch %d: %d pack files, want at most %d", i, len(packs), f.maxPacks+1)
		}
	}
	if resets == 0 {
		t.Fatal("the object store was never reset")
	}
}

// TestACommitThatDeletesEveryRootFile: go-git refuses to remove the work
// tree's root once a commit leaves it empty; the checkout then starts
// afresh instead of failing on every sync.
func TestACommitThatDeletesEveryRootFile(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("flat", map[string]string{"a.yaml": "a: 1\n", "b.yaml": "b: 1\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}
	mustFetch(t, f, req)

	moved := repo.CommitStrings("moved", map[string]string{"a.yaml": "", "b.yaml": "", "deploy/a.yaml": "a: 1\n"})
	res := mustFetch(t, f, req)
	if res.Commit != moved {
		t.Fatalf("commit %s, want %s", res.Commit, moved)
	}
	assertTree(t, res.Dir, map[string]string{"deploy/a.yaml": "a: 1\n"})
	if want := []string{"a.yaml", "b.yaml", "deploy/a.yaml"}; !reflect.DeepEqual(res.ChangedPaths, want) {
		t.Fatalf("ChangedPaths %v, want %v", res.ChangedPaths, want)
	}
}
