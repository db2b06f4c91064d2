package gitsrc

// The work tree: a key's tree/ is written here, straight from the source's
// object store, rather than through go-git's Worktree. go-git's checkout
// keeps an index, compares the whole tree with it on every move and
// resolves symlinks on each file call; that was a third of the
// controller's CPU during the first sync of 3,000 repositories. Here the
// first commit is written file by file, and each later one writes and
// deletes only the paths that differ between the two commits' trees.
//
// Every write goes through an os.Root opened on tree/, so that no path
// of a commit, and no symlink it holds, can lead a write outside it. The
// symlinks of the commit checked out are listed in git/links (one
// repository-relative path a line): they are checked once the tree is
// written, and a missing list means the tree is written afresh.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// checkout makes tree/ hold commit h, removes the symlinks that lead out
// of it, and only then records h as synced. It returns the paths that
// differ from the commit synced before (both sides of a rename), or nil
// when there was none, or it can no longer be read.
func (c *checkout) checkout(h plumbing.Hash) ([]string, error) {
	to, err := c.commitTree(h)
	if err != nil {
		return nil, err
	}
	prev := c.synced()
	links, listed := c.links()
	var changes object.Changes
	compared := false
	if !prev.IsZero() {
		if from, err := c.commitTree(prev); err == nil { // unreadable when the store started afresh
			if changes, err = object.DiffTree(from, to); err != nil {
				return nil, fmt.Errorf("compare %s with %s: %w", prev, h, err)
			}
			compared = true
		}
	}
	// Forget the synced commit first: a move cut short leaves none, and
	// the next checkout writes the tree afresh.
	if err := c.repo.Storer.RemoveReference(syncedRef); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(c.tree)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	moved := false
	if compared && listed {
		links, err = c.move(root, changes, links)
		moved = err == nil
	}
	if !moved {
		// A first commit, a tree from an older version, or a move that
		// failed midway (the tree is only a cache): write it afresh.
		links, err = c.writeAll(root, to)
	}
	if err != nil {
		return nil, fmt.Errorf("write the work tree of %s: %w", h, err)
	}
	slices.Sort(links)
	if err := c.setLinks(links); err != nil {
		return nil, err
	}
	if err := c.removeEscapingSymlinks(links); err != nil {
		return nil, err
	}
	if err := c.repo.Storer.SetReference(plumbing.NewHashReference(syncedRef, h)); err != nil {
		return nil, err
	}
	if !compared {
		return nil, nil
	}
	return changedPaths(changes), nil
}

// writeAll empties the work tree and writes every file of tree into it,
// returning the symlinks among them.
func (c *checkout) writeAll(root *os.Root, tree *object.Tree) ([]string, error) {
	if err := c.emptyTree(); err != nil {
		return nil, err
	}
	// A work tree written by an older version came with go-git's index,
	// which nothing reads any more.
	_ = os.Remove(filepath.Join(c.git, "index"))
	var links []string
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if errors.Is(err, io.EOF) {
			return links, nil
		}
		if err != nil {
			return nil, err
		}
		if !entry.Mode.IsFile() { // a directory comes with its files; submodules are not checked out
			continue
		}
		if err := c.writeFile(root, name, entry); err != nil {
			return nil, err
		}
		if entry.Mode == filemode.Symlink {
			links = append(links, name)
		}
	}
}

// move applies changes to a work tree that holds their starting commit,
// and returns links updated to the symlinks of the commit they end at.
// Removals go first, so that a file can become a directory and back.
func (c *checkout) move(root *os.Root, changes object.Changes, links []string) ([]string, error) {
	for _, ch := range changes {
		if name := ch.From.Name; name != "" {
			if err := removeFile(root, name); err != nil {
				return nil, err
			}
			links = slices.DeleteFunc(links, func(l string) bool { return l == name })
		}
	}
	for _, ch := range changes {
		entry := ch.To.TreeEntry
		if ch.To.Name == "" || !entry.Mode.IsFile() {
			continue
		}
		if err := c.writeFile(root, ch.To.Name, entry); err != nil {
			return nil, err
		}
		if entry.Mode == filemode.Symlink {
			links = append(links, ch.To.Name)
		}
	}
	return links, nil
}

// writeFile writes one file or symlink of the commit at name.
func (c *checkout) writeFile(root *os.Root, name string, entry object.TreeEntry) error {
	if err := checkTreePath(name); err != nil {
		return err
	}
	blob, err := c.repo.BlobObject(entry.Hash)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	r, err := blob.Reader()
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer r.Close()
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if entry.Mode == filemode.Symlink {
		target, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		return root.Symlink(string(target), name)
	}
	perm := fs.FileMode(0o644)
	if entry.Mode == filemode.Executable {
		perm = 0o755
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Close()
}

// removeFile deletes name and then each parent directory it leaves empty.
func removeFile(root *os.Root, name string) error {
	if err := checkTreePath(name); err != nil {
		return err
	}
	if err := root.RemoveAll(name); err != nil {
		return err
	}
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if root.Remove(dir) != nil { // not empty: its parents are not either
			break
		}
	}
	return nil
}

// checkTreePath refuses a path no valid commit holds: one that is not
// local to the tree, or that names a .git directory. os.Root already
// keeps every write inside the tree; this says which path was wrong.
func checkTreePath(name string) error {
	if !filepath.IsLocal(name) || path.Clean(name) != name {
		return fmt.Errorf("the commit holds a path that leaves the repository, %q: refused", name)
	}
	for _, part := range strings.Split(name, "/") {
		if strings.EqualFold(part, ".git") {
			return fmt.Errorf("the commit holds a path inside a .git directory, %q: refused", name)
		}
	}
	return nil
}

// emptyTree removes everything from the work tree.
func (c *checkout) emptyTree() error {
	entries, err := os.ReadDir(c.tree)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(c.tree, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// links returns the symlinks of the synced commit, and whether they are
// listed at all (a checkout written by an older version lists none).
func (c *checkout) links() ([]string, bool) {
	data, err := os.ReadFile(filepath.Join(c.git, "links"))
	if err != nil {
		return nil, false
	}
	var links []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			links = append(links, l)
		}
	}
	return links, true
}

func (c *checkout) setLinks(links []string) error {
	var b strings.Builder
	for _, l := range links {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return os.WriteFile(filepath.Join(c.git, "links"), []byte(b.String()), 0o600)
}

// changedPaths lists both sides of every change, sorted, once each.
func changedPaths(changes object.Changes) []string {
	paths := []string{}
	for _, ch := range changes {
		for _, p := range []string{ch.From.Name, ch.To.Name} {
			if p != "" {
				paths = append(paths, p)
			}
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}
