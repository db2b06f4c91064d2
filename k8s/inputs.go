package k8s

import (
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/false-systems/alumiini/k8s/sops"
)

// LoadManifestsReading is LoadManifestsDecrypting that also returns the files
// outside dir that the build read or looked for, relative to root,
// slash-separated and sorted (never nil): what, besides the files under
// dir, a commit must change to change the objects (a kustomize base
// elsewhere in the repository, a symbolic link's target). Both the path as
// named and its target are listed.
func LoadManifestsReading(root, dir string, dec *sops.Decryptor) ([]*unstructured.Unstructured, []error, []string) {
	l, err := newLoader(root, dir)
	if err != nil {
		return nil, []error{err}, nil
	}
	l.dec = dec
	l.reads = map[string]bool{}
	l.walk(l.dir)
	inside := filepath.ToSlash(relTo(l.root, l.dir))
	read := []string{}
	for p := range l.reads {
		if inside != "." && !under(p, inside) {
			read = append(read, p)
		}
	}
	slices.Sort(read)
	return l.objs, l.errs, read
}

// noteRead records that the build read path (absolute), as named and as
// resolved, when recording.
func (l *loader) noteRead(path string) {
	if l.reads == nil {
		return
	}
	l.noteReal(path)
	l.noteReal(resolved(path))
}

// noteReal records path (absolute) as given, resolving nothing, when
// recording: the caller has resolved it, or notes a link as named.
func (l *loader) noteReal(path string) {
	if l.reads == nil {
		return
	}
	if rel, err := filepath.Rel(l.root, path); err == nil && filepath.IsLocal(rel) {
		l.reads[filepath.ToSlash(rel)] = true
	}
}

// resolved is path with symbolic links resolved, or path when it does not
// exist (a file kustomize looked for and did not find).
func resolved(path string) string {
	if real, err := realPath(path); err == nil {
		return real
	}
	return path
}

// readRecorder is the kustomize file system that notes every file the build
// reads or checks for.
type readRecorder struct {
	filesys.FileSystem
	note func(path string)
}

func (r readRecorder) ReadFile(path string) ([]byte, error) {
	r.note(path)
	return r.FileSystem.ReadFile(path)
}

func (r readRecorder) Open(path string) (filesys.File, error) {
	r.note(path)
	return r.FileSystem.Open(path)
}

func (r readRecorder) Exists(path string) bool {
	r.note(path)
	return r.FileSystem.Exists(path)
}

// recording wraps fsys when this load records what it reads.
func (l *loader) recording(fsys filesys.FileSystem) filesys.FileSystem {
	if l.reads == nil {
		return fsys
	}
	return readRecorder{FileSystem: fsys, note: l.noteRead}
}

// InputsChanged reports whether a commit that changed the paths changed
// (relative to the repository root, slash-separated, as gitsrc reports
// them) may change what a repository builds from dir (spec.path, "" for
// the root), given the files its last build read (LoadManifestsReading).
// nil changed means unknown: it may.
func InputsChanged(changed []string, dir string, read []string) bool {
	if changed == nil {
		return true
	}
	dir = strings.Trim(filepath.ToSlash(filepath.Clean("/"+dir)), "/")
	for _, c := range changed {
		if dir == "" || under(c, dir) {
			return true
		}
		for _, r := range read {
			// A changed directory symlink on the way to a file read
			// changes what was read.
			if under(r, c) {
				return true
			}
		}
	}
	return false
}

// under reports whether path is dir or inside it (slash-separated).
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
