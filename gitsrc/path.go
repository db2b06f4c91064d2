package gitsrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// removeEscapingSymlinks deletes every checked-out symlink that does not
// resolve to something inside the work tree (outside it, or dangling), so
// nothing that reads the manifest directory can be led out of the checkout.
// Git records symlinks in the index, so no directory walk is needed.
func (c *checkout) removeEscapingSymlinks() error {
	idx, err := c.repo.Storer.Index()
	if err != nil {
		return err
	}
	for _, e := range idx.Entries {
		if e.Mode != filemode.Symlink {
			continue
		}
		link := filepath.Join(c.tree, filepath.FromSlash(e.Name))
		if target, err := filepath.EvalSymlinks(link); err == nil && inside(c.tree, target) {
			continue
		}
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// droppedLinks lists the symlinks under path that removeEscapingSymlinks
// deleted: those git records but the work tree no longer holds.
func (c *checkout) droppedLinks(path string) []string {
	idx, err := c.repo.Storer.Index()
	if err != nil {
		return nil
	}
	prefix := filepath.ToSlash(filepath.Clean(path)) + "/"
	var out []string
	for _, e := range idx.Entries {
		if e.Mode != filemode.Symlink || (path != "" && !strings.HasPrefix(e.Name, prefix)) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(c.tree, filepath.FromSlash(e.Name))); errors.Is(err, fs.ErrNotExist) {
			out = append(out, e.Name)
		}
	}
	return out
}

// manifestDir resolves spec.path (already known to be local) inside the
// work tree of commit.
func (c *checkout) manifestDir(path string, commit plumbing.Hash) (string, error) {
	if path == "" {
		return c.tree, nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(c.tree, filepath.FromSlash(path)))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if link := c.removedSymlinkOn(path); link != "" {
			return "", fmt.Errorf("spec.path %q goes through symlink %q, which leads outside the repository and is not followed", path, link)
		}
		return "", fmt.Errorf("spec.path %q does not exist in commit %s: check spec.path", path, commit)
	case err != nil:
		return "", fmt.Errorf("resolve spec.path %q: %w", path, err)
	case !inside(c.tree, dir):
		return "", fmt.Errorf("spec.path %q leads outside the repository through a symlink", path)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return "", fmt.Errorf("spec.path %q is not a directory in commit %s", path, commit)
	}
	return dir, nil
}

// removedSymlinkOn names the symlink on path that removeEscapingSymlinks
// deleted, if any; only used to explain a missing path.
func (c *checkout) removedSymlinkOn(path string) string {
	idx, err := c.repo.Storer.Index()
	if err != nil {
		return ""
	}
	path = filepath.ToSlash(filepath.Clean(path))
	for _, e := range idx.Entries {
		if e.Mode == filemode.Symlink && (path == e.Name || strings.HasPrefix(path, e.Name+"/")) {
			return e.Name
		}
	}
	return ""
}

func inside(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && filepath.IsLocal(rel)
}
