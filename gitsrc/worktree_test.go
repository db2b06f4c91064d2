package gitsrc

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/false-systems/alumiini/test/gitserver"
)

// TestWorkTreeFollowsEveryKindOfChange moves one checkout through commits
// that turn files into directories and back, files into symlinks and
// back, a symlink to a directory into a directory, flip an executable bit,
// empty whole directories, and give a dangling symlink its target: after
// each, the work tree holds exactly the commit (a symlink as "-> target"),
// with no directory left behind, and ChangedPaths and DroppedLinks say
// what moved and what was left out.
func TestWorkTreeFollowsEveryKindOfChange(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a": "file a\n", "deploy/x.yaml": "x: 1\n", "deploy/sub/y.yaml": "y: 1\n"})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}
	res := mustFetch(t, f, req)
	if want := map[string]string{"a": "file a\n", "deploy/x.yaml": "x: 1\n", "deploy/sub/y.yaml": "y: 1\n"}; !reflect.DeepEqual(treeOf(t, res.Root), want) {
		t.Fatalf("first tree %v, want %v", treeOf(t, res.Root), want)
	}

	steps := []struct {
		name    string
		change  func()
		tree    map[string]string
		changed []string
		dropped []string
	}{
		{"a file becomes a directory", func() {
			repo.CommitStrings("a is a dir", map[string]string{"a": "", "a/b.yaml": "b: 1\n"})
		}, map[string]string{"a/b.yaml": "b: 1\n", "deploy/x.yaml": "x: 1\n", "deploy/sub/y.yaml": "y: 1\n"},
			[]string{"a", "a/b.yaml"}, nil},
		{"a directory empties and goes", func() {
			repo.CommitStrings("no sub", map[string]string{"deploy/sub/y.yaml": ""})
		}, map[string]string{"a/b.yaml": "b: 1\n", "deploy/x.yaml": "x: 1\n"},
			[]string{"deploy/sub/y.yaml"}, nil},
		{"a file becomes a symlink", func() {
			repo.CommitStrings("x is a link", map[string]string{"deploy/x.yaml": "", "deploy/real.yaml": "x: 2\n"})
			repo.Symlink("real.yaml", "deploy/x.yaml")
			repo.CommitStrings("link", nil)
		}, map[string]string{"a/b.yaml": "b: 1\n", "deploy/real.yaml": "x: 2\n", "deploy/x.yaml": "-> real.yaml"},
			[]string{"deploy/real.yaml", "deploy/x.yaml"}, nil},
		{"a symlink becomes a file, a directory becomes a file", func() {
			repo.Git("rm", "-q", "-r", "a", "deploy/x.yaml")
			repo.CommitStrings("back", map[string]string{"a": "file a again\n", "deploy/x.yaml": "x: 3\n"})
		}, map[string]string{"a": "file a again\n", "deploy/real.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n"},
			[]string{"a", "a/b.yaml", "deploy/x.yaml"}, nil},
		{"a rename", func() {
			repo.Git("mv", "deploy/real.yaml", "deploy/renamed.yaml")
			repo.CommitStrings("rename", nil)
		}, map[string]string{"a": "file a again\n", "deploy/renamed.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n"},
			[]string{"deploy/real.yaml", "deploy/renamed.yaml"}, nil},
		{"a symlink to a directory", func() {
			repo.Symlink("deploy", "lnk")
			repo.CommitStrings("lnk", nil)
		}, map[string]string{"a": "file a again\n", "deploy/renamed.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n", "lnk": "-> deploy"},
			[]string{"lnk"}, nil},
		{"the symlink to a directory becomes a directory", func() {
			repo.Git("rm", "-q", "lnk")
			repo.CommitStrings("lnk is a dir", map[string]string{"lnk/z.yaml": "z: 1\n"})
		}, map[string]string{"a": "file a again\n", "deploy/renamed.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n", "lnk/z.yaml": "z: 1\n"},
			[]string{"lnk", "lnk/z.yaml"}, nil},
		{"an executable bit", func() {
			if err := os.Chmod(filepath.Join(repo.WorkDir(), "a"), 0o755); err != nil {
				t.Fatal(err)
			}
			repo.CommitStrings("+x", nil)
		}, map[string]string{"a": "file a again\n (executable)", "deploy/renamed.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n", "lnk/z.yaml": "z: 1\n"},
			[]string{"a"}, nil},
		{"a dangling symlink", func() {
			repo.Symlink("future.yaml", "later.yaml")
			repo.CommitStrings("later", nil)
		}, map[string]string{"a": "file a again\n (executable)", "deploy/renamed.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n", "lnk/z.yaml": "z: 1\n"},
			[]string{"later.yaml"}, []string{"later.yaml"}},
		{"its target arrives", func() {
			repo.CommitStrings("future", map[string]string{"future.yaml": "f: 1\n"})
		}, map[string]string{"a": "file a again\n (executable)", "deploy/renamed.yaml": "x: 2\n", "deploy/x.yaml": "x: 3\n", "lnk/z.yaml": "z: 1\n",
			"future.yaml": "f: 1\n", "later.yaml": "-> future.yaml"},
			[]string{"future.yaml"}, nil},
	}
	// A file no commit holds survives a move, not a rewrite: it shows
	// that each step moved the tree.
	marker := filepath.Join(res.Root, "untracked.marker")
	if err := os.WriteFile(marker, []byte("m"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, step := range steps {
		step.change()
		res := mustFetch(t, f, req)
		if _, err := os.Stat(marker); err != nil {
			t.Fatalf("%s: the tree was written afresh, not moved: %v", step.name, err)
		}
		step.tree["untracked.marker"] = "m"
		if got := treeOf(t, res.Root); !reflect.DeepEqual(got, step.tree) {
			t.Errorf("%s: tree %v, want %v", step.name, got, step.tree)
		}
		assertNoEmptyDirs(t, res.Root)
		if !reflect.DeepEqual(res.ChangedPaths, step.changed) {
			t.Errorf("%s: ChangedPaths %v, want %v", step.name, res.ChangedPaths, step.changed)
		}
		if !reflect.DeepEqual(res.DroppedLinks, step.dropped) {
			t.Errorf("%s: DroppedLinks %v, want %v", step.name, res.DroppedLinks, step.dropped)
		}
	}
}

// TestWorkTreeCutShortIsWrittenAfresh: a checkout that a crash cut short
// (no synced commit recorded), that an older version wrote (no list of
// symlinks, or one a line each) is written afresh, so nothing stale or
// stray survives it.
func TestWorkTreeCutShortIsWrittenAfresh(t *testing.T) {
	for _, lost := range []string{"synced commit", "symlink list", "symlink list a line each"} {
		t.Run(lost, func(t *testing.T) {
			srv := gitserver.New(t)
			repo := srv.CreateRepo(t, "apps")
			repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n", "b.yaml": "b: 1\n"})
			f := NewFetcher(t.TempDir())
			req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}
			res := mustFetch(t, f, req)

			// What a move cut short leaves: a file it wrote and one the
			// commit does not hold.
			for name, content := range map[string]string{"b.yaml": "half-written", "stray.yaml": "stray: 1\n"} {
				if err := os.WriteFile(filepath.Join(res.Root, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dir, err := f.keyDir(req.Key)
			if err != nil {
				t.Fatal(err)
			}
			co, err := loadCheckout(dir, memory.NewStorage())
			if err != nil {
				t.Fatal(err)
			}
			switch lost {
			case "synced commit":
				err = co.repo.Storer.RemoveReference(syncedRef)
			case "symlink list":
				err = os.Remove(filepath.Join(co.git, "links"))
			default:
				err = os.WriteFile(filepath.Join(co.git, "links"), []byte("a.yaml\nb.yaml\n"), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}

			repo.CommitStrings("second", map[string]string{"a.yaml": "a: 2\n"})
			first := res.Commit
			res = mustFetch(t, f, req)
			assertTree(t, res.Root, map[string]string{"a.yaml": "a: 2\n", "b.yaml": "b: 1\n"})
			// Without a synced commit nothing says what changed; with one,
			// the trees still do.
			wantPrev, wantChanged := "", []string(nil)
			if lost != "synced commit" {
				wantPrev, wantChanged = first, []string{"a.yaml"}
			}
			if res.Previous != wantPrev || !reflect.DeepEqual(res.ChangedPaths, wantChanged) {
				t.Errorf("Previous %q, ChangedPaths %v; want %q, %v", res.Previous, res.ChangedPaths, wantPrev, wantChanged)
			}
		})
	}
}

// TestCheckTreePath: what a valid commit can hold passes; what would leave
// the work tree, or write into a .git directory, is refused.
func TestCheckTreePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"a.yaml", true},
		{"deploy/base/kustomization.yaml", true},
		{".github/workflows/ci.yaml", true},
		{"..", false},
		{"../x", false},
		{"a/../../x", false},
		{"a/../b", false}, // not as git writes it
		{"/etc/passwd", false},
		{"", false},
		{".git/config", false},
		{"sub/.GIT/hooks/post-checkout", false},
		{".git./config", false},
		{"GIT~1/config", false},
		{"a\nb.yaml", false},
		{"tab\there", false},
		{"a//b", false},
		{"a/", false},
	} {
		if err := checkTreePath(tc.path); (err == nil) != tc.ok {
			t.Errorf("checkTreePath(%q) = %v, want ok %v", tc.path, err, tc.ok)
		}
	}
}

// TestACommitWithAnEscapingPathIsRefused: a commit crafted with a tree
// entry git itself never writes (one that climbs out, one with a newline,
// which would also split the list of symlinks, one named like .git) fails
// the fetch with the path named, whether it is the first commit checked
// out or a move from another (whose changes go-git does not check), and
// nothing is written outside the checkout or under that name.
func TestACommitWithAnEscapingPathIsRefused(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"../escaped.yaml", "leaves the repository"},
		{"escaped\n../../x", "control character"},
		{".Git", "a .git path"},
	} {
		for _, first := range []bool{true, false} {
			t.Run(fmt.Sprintf("%q/first=%v", tc.name, first), func(t *testing.T) {
				srv := gitserver.New(t)
				repo := srv.CreateRepo(t, "apps")
				repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
				cache := t.TempDir()
				f := NewFetcher(filepath.Join(cache, "alumiini"))
				req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}}
				if !first {
					mustFetch(t, f, req)
				}
				pushCraftedCommit(t, repo, object.TreeEntry{Name: tc.name, Mode: filemode.Symlink},
					object.TreeEntry{Name: "a.yaml", Mode: filemode.Regular})
				fetchErr(t, f, req, fmt.Sprintf("%q", tc.name), tc.want)
				err := filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
					if err == nil && (strings.Contains(d.Name(), "escaped") || strings.EqualFold(d.Name(), ".git")) {
						t.Errorf("%s was written", p)
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestASubmoduleIsAnEmptyDirectory: a submodule's commit is not fetched,
// but its path exists, as go-git's checkout left it, so a spec.path that
// names it is found (and empty).
func TestASubmoduleIsAnEmptyDirectory(t *testing.T) {
	srv := gitserver.New(t)
	repo := srv.CreateRepo(t, "apps")
	repo.CommitStrings("first", map[string]string{"a.yaml": "a: 1\n"})
	pushCraftedCommit(t, repo, object.TreeEntry{Name: "a.yaml", Mode: filemode.Regular},
		object.TreeEntry{Name: "vendor", Mode: filemode.Submodule, Hash: plumbing.NewHash("0123456789abcdef0123456789abcdef01234567")})
	f := NewFetcher(t.TempDir())
	req := Request{Key: "ns/apps", URL: repo.URL(), Ref: Ref{Branch: "main"}, Path: "vendor"}
	res := mustFetch(t, f, req)
	if entries, err := os.ReadDir(res.Dir); err != nil || len(entries) != 0 || filepath.Base(res.Dir) != "vendor" {
		t.Fatalf("spec.path at a submodule: dir %s, entries %v, %v; want the empty vendor directory", res.Dir, entries, err)
	}
}

// pushCraftedCommit makes a commit on main of repo whose root tree holds
// entries as given (those without a hash: files reading "crafted"),
// written with go-git straight into the server's repository, which lets
// it hold what git itself refuses to write.
func pushCraftedCommit(t *testing.T, repo *gitserver.Repo, entries ...object.TreeEntry) {
	t.Helper()
	bare, err := git.PlainOpen(repo.BareDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := storeObject(t, bare, plumbing.BlobObject, []byte("crafted\n"))
	for i := range entries {
		if entries[i].Hash.IsZero() {
			entries[i].Hash = blob
		}
	}
	slices.SortFunc(entries, func(a, b object.TreeEntry) int { return strings.Compare(a.Name, b.Name) })
	head, err := bare.Reference(plumbing.NewBranchReferenceName("main"), true)
	if err != nil {
		t.Fatal(err)
	}
	commit := &object.Commit{Message: "crafted", TreeHash: storeTree(t, bare, entries...), ParentHashes: []plumbing.Hash{head.Hash()},
		Author: object.Signature{Name: "x", Email: "x@example.com"}}
	commit.Committer = commit.Author
	enc := bare.Storer.NewEncodedObject()
	if err := commit.Encode(enc); err != nil {
		t.Fatal(err)
	}
	sha, err := bare.Storer.SetEncodedObject(enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bare.Storer.SetReference(plumbing.NewHashReference(head.Name(), sha)); err != nil {
		t.Fatal(err)
	}
}

func storeObject(t *testing.T, r *git.Repository, kind plumbing.ObjectType, content []byte) plumbing.Hash {
	t.Helper()
	obj := r.Storer.NewEncodedObject()
	obj.SetType(kind)
	w, err := obj.Writer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := r.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func storeTree(t *testing.T, r *git.Repository, entries ...object.TreeEntry) plumbing.Hash {
	t.Helper()
	obj := r.Storer.NewEncodedObject()
	if err := (&object.Tree{Entries: entries}).Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := r.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// assertNoEmptyDirs fails when a directory under root holds nothing.
func assertNoEmptyDirs(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == root {
			return err
		}
		if entries, err := os.ReadDir(p); err == nil && len(entries) == 0 {
			t.Errorf("empty directory %s left behind", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeOf maps each file under root to its content and each symlink to
// "-> target", relative and slash-separated; an executable file's content
// ends with " (executable)".
func treeOf(t *testing.T, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.Type()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			tree[rel] = "-> " + target
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		tree[rel] = string(b)
		if info.Mode()&0o100 != 0 {
			tree[rel] += " (executable)"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}
