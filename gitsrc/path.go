package gitsrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// removeEscapingSymlinks deletes every checked-out symlink in links that
// does not resolve to something inside the work tree (outside it, or
// dangling), so nothing that reads the manifest directory can be led out of
// the checkout. The checkout lists the commit's symlinks, so no directory
// walk is needed; root resolves each one without looking outside the tree.
func removeEscapingSymlinks(root *os.Root, links []string) error {
	for _, name := range links {
		if _, err := root.Stat(name); err == nil {
			continue
		}
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// droppedLinks lists the symlinks of the commit (links) under path that
// removeEscapingSymlinks deleted: those the work tree no longer holds.
func (c *checkout) droppedLinks(path string, links []string) []string {
	prefix := filepath.ToSlash(filepath.Clean(path)) + "/"
	var out []string
	for _, name := range links {
		if path != "" && !strings.HasPrefix(name, prefix) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(c.tree, filepath.FromSlash(name))); errors.Is(err, fs.ErrNotExist) {
			out = append(out, name)
		}
	}
	return out
}

// manifestDir resolves spec.path (already known to be local) inside the
// work tree of commit.
// links are the commit's symlinks, which say why a path is missing.
func (c *checkout) manifestDir(path string, commit plumbing.Hash, links []string) (string, error) {
	if path == "" {
		return c.tree, nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(c.tree, filepath.FromSlash(path)))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if link := removedSymlinkOn(path, links); link != "" {
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

// removedSymlinkOn names the symlink among links on path (which is
// missing: removeEscapingSymlinks deleted it); only used to explain a
// missing path.
func removedSymlinkOn(path string, links []string) string {
	path = filepath.ToSlash(filepath.Clean(path))
	for _, name := range links {
		if path == name || strings.HasPrefix(path, name+"/") {
			return name
		}
	}
	return ""
}

func inside(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && filepath.IsLocal(rel)
}
