package gitsrc

// The work tree: a key's tree/ is written here, straight from the source's
// object store, rather than through go-git's Worktree. go-git's checkout
// keeps an index, compares the whole tree with it on every move and
// resolves symlinks on each file call; that was a third of the
// controller's CPU during the first sync of 3,000 repositories. Here the
// first commit is written file by file, and each later one writes and
// deletes only the paths that differ between the two commits' trees.
//
// Every write of a commit's file goes through an os.Root opened on tree/,
// so that no path of a commit, and no symlink it holds, can lead a write
// outside it. The symlinks of the commit checked out are listed in
// git/links (repository-relative paths, NUL-separated): they are checked
// once the tree is written, and a missing list means the tree is written
// afresh.

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
// when there was none, or it can no longer be read; and the commit's
// symlinks.
func (c *checkout) checkout(h plumbing.Hash) (changed, links []string, err error) {
	to, err := c.commitTree(h)
	if err != nil {
		return nil, nil, err
	}
	prev := c.synced()
	links, listed := c.links()
	var changes object.Changes
	compared := false
	if !prev.IsZero() {
		// Unreadable when the store started afresh; a comparison that
		// fails leaves nothing to move by: both write the tree afresh.
		if from, err := c.commitTree(prev); err == nil {
			changes, err = object.DiffTree(from, to)
			compared = err == nil
		}
	}
	// Forget the synced commit first: a move cut short by a crash of the
	// process leaves none, and the next checkout writes the tree afresh.
	if err := c.repo.Storer.RemoveReference(syncedRef); err != nil {
		return nil, nil, err
	}
	root, err := os.OpenRoot(c.tree)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	if links, err = c.write(root, to, compared && listed, changes, links); err != nil {
		return nil, nil, fmt.Errorf("write the work tree of %s: %w", h, err)
	}
	if err := c.setLinks(links); err != nil {
		return nil, nil, err
	}
	if err := removeEscapingSymlinks(root, links); err != nil {
		return nil, nil, err
	}
	if err := c.repo.Storer.SetReference(plumbing.NewHashReference(syncedRef, h)); err != nil {
		return nil, nil, err
	}
	if compared {
		changed = changedPaths(changes)
	}
	return changed, links, nil
}

// write moves the work tree by changes when canMove, and otherwise, or
// when the move fails (the tree is only a cache), writes it afresh. It
// returns the commit's symlinks, sorted.
func (c *checkout) write(root *os.Root, to *object.Tree, canMove bool, changes object.Changes, links []string) ([]string, error) {
	var moveErr error
	if canMove {
		if links, moveErr = c.move(root, to, changes, links); moveErr == nil {
			return links, nil
		}
	}
	links = nil
	if err := emptyTree(root); err != nil {
		return nil, errors.Join(moveErr, err)
	}
	if err := c.writeTree(root, to, "", &links); err != nil {
		return nil, errors.Join(moveErr, err)
	}
	slices.Sort(links)
	return links, nil
}

// writeTree writes every entry of tree under dir ("" for the root),
// adding the symlinks among them to links. It walks the trees itself:
// go-git's TreeWalker ends quietly at a subtree it cannot read.
func (c *checkout) writeTree(root *os.Root, tree *object.Tree, dir string, links *[]string) error {
	for _, entry := range tree.Entries {
		name := entry.Name
		if dir != "" {
			name = dir + "/" + entry.Name
		}
		if entry.Mode != filemode.Dir {
			if err := c.writeEntry(root, name, entry, links); err != nil {
				return err
			}
			continue
		}
		if err := checkTreePath(name); err != nil {
			return err
		}
		sub, err := c.repo.TreeObject(entry.Hash)
		if err != nil {
			return fmt.Errorf("read directory %s: %w", name, err)
		}
		if err := c.writeTree(root, sub, name, links); err != nil {
			return err
		}
	}
	return nil
}

// move applies changes to a work tree that holds their starting commit,
// to, and returns links updated to the symlinks of to. Removals go first,
// so that a file can become a directory and back.
func (c *checkout) move(root *os.Root, to *object.Tree, changes object.Changes, links []string) ([]string, error) {
	kept := map[string]bool{}
	for _, l := range links {
		kept[l] = true
	}
	for _, ch := range changes {
		if name := ch.From.Name; name != "" {
			if err := removeFile(root, name); err != nil {
				return nil, err
			}
			delete(kept, name)
		}
	}
	var added []string
	for _, ch := range changes {
		if ch.To.Name != "" {
			if err := c.writeEntry(root, ch.To.Name, ch.To.TreeEntry, &added); err != nil {
				return nil, err
			}
		}
	}
	// A link the last checkout dropped as dangling may lead somewhere now
	// (this commit added its target): write it again for the check.
	for l := range kept {
		if _, err := root.Lstat(l); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		entry, err := c.entryAt(to, l)
		if err != nil {
			return nil, err
		}
		if err := c.writeEntry(root, l, entry, nil); err != nil {
			return nil, err
		}
	}
	for l := range kept {
		added = append(added, l)
	}
	slices.Sort(added)
	return added, nil
}

// entryAt finds the entry at name in tree. (go-git's FindEntry checks
// names by stricter rules than checkTreePath, which wrote the tree.)
func (c *checkout) entryAt(tree *object.Tree, name string) (object.TreeEntry, error) {
	parts := strings.Split(name, "/")
	for i, part := range parts {
		j := slices.IndexFunc(tree.Entries, func(e object.TreeEntry) bool { return e.Name == part })
		if j < 0 {
			return object.TreeEntry{}, fmt.Errorf("symlink %s is not in the commit", name)
		}
		entry := tree.Entries[j]
		if i == len(parts)-1 {
			return entry, nil
		}
		var err error
		if tree, err = c.repo.TreeObject(entry.Hash); err != nil {
			return object.TreeEntry{}, fmt.Errorf("read directory of symlink %s: %w", name, err)
		}
	}
	return object.TreeEntry{}, fmt.Errorf("empty symlink path")
}

// writeEntry writes one file, symlink or submodule of the commit at name,
// and adds name to links when it is a symlink. A submodule, whose commit
// is not fetched, is an empty directory.
func (c *checkout) writeEntry(root *os.Root, name string, entry object.TreeEntry, links *[]string) error {
	if err := checkTreePath(name); err != nil {
		return err
	}
	if !entry.Mode.IsFile() && entry.Mode != filemode.Submodule {
		return nil // a directory comes with its files
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if entry.Mode == filemode.Submodule {
		return root.MkdirAll(name, 0o755)
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
	if entry.Mode == filemode.Symlink {
		target, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if links != nil {
			*links = append(*links, name)
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

// refused ends the error of a path checkTreePath refuses.
const refused = "refused: ALUMIINI checks out no such path, so push a commit without it"

// checkTreePath refuses a path with a control character, one that is not
// local and clean, or one with a .git component (also as .GIT, .git. or
// git~1). go-git checks each name only in its TreeWalker and FindEntry,
// not in the changes DiffTree lists. os.Root keeps every write inside the
// tree anyway; this also keeps the list of symlinks (git/links) one name
// per entry, and says which path was wrong.
func checkTreePath(name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] == 0x7f {
			return fmt.Errorf("the commit holds a path with a control character, %q: %s", name, refused)
		}
	}
	if !filepath.IsLocal(name) || path.Clean(name) != name {
		return fmt.Errorf("the commit holds a path that leaves the repository, %q: %s", name, refused)
	}
	for _, part := range strings.Split(name, "/") {
		if p := strings.ToLower(strings.TrimRight(part, ". ")); p == ".git" || p == "git~1" {
			return fmt.Errorf("the commit holds a .git path, %q: %s", name, refused)
		}
	}
	return nil
}

// emptyTree removes everything from the work tree.
func emptyTree(root *os.Root) error {
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := root.RemoveAll(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// links returns the symlinks of the synced commit, and whether they are
// listed at all: a checkout written by an older version lists none, and a
// list with a name no commit can hold is not trusted.
func (c *checkout) links() ([]string, bool) {
	data, err := os.ReadFile(filepath.Join(c.git, "links"))
	if err != nil {
		return nil, false
	}
	var links []string
	for _, l := range strings.Split(string(data), "\x00") {
		if l == "" {
			continue
		}
		if checkTreePath(l) != nil {
			return nil, false
		}
		links = append(links, l)
	}
	return links, true
}

// setLinks lists links, NUL-separated: no path in a git tree holds a NUL.
func (c *checkout) setLinks(links []string) error {
	var b strings.Builder
	for _, l := range links {
		b.WriteString(l)
		b.WriteByte(0)
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
