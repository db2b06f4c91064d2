// Package k8s turns a directory of manifests into objects in a cluster. It
// loads plain YAML and JSON files or builds a kustomization, server-side
// applies the objects in dependency order, prunes the objects that left git,
// and compares the live cluster with git to find drift.
//
// An Applier holds no per-repository state: one is shared by every
// GitRepository, and everything a sync needs arrives in its Options.
package k8s

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s/sops"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// LoadManifests reads every .yaml, .yml and .json file under dir,
// recursively and in lexical order, or builds dir with kustomize when it
// holds a kustomization. It returns every good object and one error per bad
// file or document: a bad document never hides the good ones. Nothing
// outside dir is read.
func LoadManifests(dir string) ([]*unstructured.Unstructured, []error) {
	return LoadManifestsIn(dir, dir)
}

// LoadManifestsIn is LoadManifests for a directory inside a repository
// checkout: nothing outside root is read (so an overlay may use a base
// elsewhere in the checkout, but never outside it), and file names in
// errors are relative to root.
func LoadManifestsIn(root, dir string) ([]*unstructured.Unstructured, []error) {
	return LoadManifestsDecrypting(root, dir, nil)
}

// LoadManifestsDecrypting is LoadManifestsIn that decrypts SOPS-encrypted
// files in memory with dec before parsing them. A file dec cannot decrypt
// fails alone; with a nil dec every SOPS file is refused with a message
// saying how to set spec.decryption.
func LoadManifestsDecrypting(root, dir string, dec *sops.Decryptor) ([]*unstructured.Unstructured, []error) {
	l, err := newLoader(root, dir)
	if err != nil {
		return nil, []error{err}
	}
	l.dec = dec
	l.walk(l.dir)
	return l.objs, l.errs
}

// loader collects the objects and errors of one LoadManifestsIn call.
type loader struct {
	root, dir string          // absolute, symlinks resolved
	dec       *sops.Decryptor // nil: SOPS files are refused
	objs      []*unstructured.Unstructured
	errs      []error
	reads     map[string]bool // files read, when recording (inputs.go)
	digest    string          // of the SOPS file being decoded, "" for a plain one
}

func newLoader(root, dir string) (*loader, error) {
	realRoot, err := realPath(root)
	if err != nil {
		return nil, fmt.Errorf("repository checkout %s: %w", root, err)
	}
	realDir, err := realPath(dir)
	if err != nil {
		return nil, fmt.Errorf("manifest path %s: %w (check spec.path)", relTo(root, dir), err)
	}
	if !within(realRoot, realDir) {
		return nil, fmt.Errorf("manifest path %s leaves the repository checkout (check spec.path)", relTo(root, dir))
	}
	if info, err := os.Stat(realDir); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("manifest path %s is not a directory (check spec.path)", relTo(root, dir))
	}
	return &loader{root: realRoot, dir: realDir}, nil
}

// walk loads dir. A directory with a kustomization is built as a whole by
// kustomize; directories and files whose names start with a dot (.git,
// .github workflows, editor files) are never manifests and are skipped.
func (l *loader) walk(dir string) {
	if hasKustomization(dir) {
		l.kustomize(dir)
		return
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			l.fail(path, err)
			return nil
		}
		if path == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if hasKustomization(path) {
				l.kustomize(path)
				return filepath.SkipDir
			}
			return nil
		}
		if isManifestFile(d.Name()) {
			l.readFile(path, d.Type().IsRegular())
		}
		return nil
	})
	if err != nil {
		l.fail(dir, err)
	}
}

func isManifestFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return !isKustomizationFile(name)
	}
	return false
}

func isKustomizationFile(name string) bool {
	switch name {
	case "kustomization.yaml", "kustomization.yml", "Kustomization":
		return true
	}
	return false
}

func hasKustomization(dir string) bool {
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if info, err := os.Stat(filepath.Join(dir, name)); err == nil && info.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// maxManifestBytes bounds one manifest file, so that a huge file in git
// cannot exhaust the controller's memory.
const maxManifestBytes = 8 << 20

// readFile decodes one manifest file. A symbolic link is followed only when
// it stays inside the checkout.
func (l *loader) readFile(path string, regular bool) {
	real, err := l.resolveFile(path, regular)
	if err != nil {
		l.fail(path, err)
		return
	}
	if info, err := os.Stat(real); err == nil && info.Size() > maxManifestBytes {
		l.fail(path, fmt.Errorf("file is %d bytes, more than the %d a manifest file may have; split it", info.Size(), maxManifestBytes))
		return
	}
	l.noteReal(path) // as named and, for a link, as resolved above: not resolved twice
	if real != path {
		l.noteReal(real)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		l.fail(path, err)
		return
	}
	isJSON := strings.EqualFold(filepath.Ext(path), ".json")
	l.digest = ""
	if sops.IsEncrypted(data) {
		l.digest = digestOf(data)
	}
	defer func() { l.digest = "" }()
	if data, err = l.decrypt(data, isJSON); err != nil {
		l.fail(path, err)
		return
	}
	if isJSON {
		l.decodeJSON(l.rel(path)+": document 1", data)
		return
	}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: document %d: %w", l.rel(path), i, err))
			return
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			if perr := positionedYAMLError(l.rel(path), data, i); perr != nil {
				l.errs = append(l.errs, perr)
				continue
			}
			l.errs = append(l.errs, fmt.Errorf("%s: document %d: invalid YAML: %w", l.rel(path), i, err))
			continue
		}
		l.decodeJSON(fmt.Sprintf("%s: document %d", l.rel(path), i), j)
	}
}

var errNoDecryption = errors.New("encrypted with SOPS but spec.decryption is not set; add spec.decryption {provider: sops, secretRef: {name: <Secret with .agekey or .asc keys>}}")

// digestOf names a SOPS file's ciphertext (AnnotationSOPSDigest).
func digestOf(ciphertext []byte) string {
	sum := sha256.Sum256(ciphertext)
	return hex.EncodeToString(sum[:16])
}

// ErrDecryption marks a SOPS file that the keys of spec.decryption could
// not decrypt (wrong key, or a tampered file).
var ErrDecryption = errors.New("SOPS decryption failed")

// decrypt returns data itself unless it is a SOPS document, which it
// decrypts in memory. Errors never carry decrypted values.
func (l *loader) decrypt(data []byte, isJSON bool) ([]byte, error) {
	if !sops.IsEncrypted(data) {
		return data, nil
	}
	if l.dec == nil {
		return nil, errNoDecryption
	}
	plain, err := l.dec.Decrypt(data, isJSON)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecryption, err)
	}
	return plain, nil
}

// decodeJSON adds the object in one document; where names it in errors.
// Empty documents (nothing, or only comments) are skipped. Integers stay
// int64, as apimachinery expects.
func (l *loader) decodeJSON(where string, data []byte) {
	var v interface{}
	if err := utiljson.Unmarshal(data, &v); err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s: invalid JSON: %w", where, err))
		return
	}
	if v == nil {
		return
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		l.errs = append(l.errs, fmt.Errorf("%s: not a Kubernetes object (expected a mapping with apiVersion, kind and metadata)", where))
		return
	}
	l.add(where, m)
}

// add validates one decoded object and keeps it, expanding a kind List
// into its items.
func (l *loader) add(where string, m map[string]interface{}) {
	if len(m) == 0 {
		return
	}
	obj := &unstructured.Unstructured{Object: m}
	if obj.GetKind() == "List" && obj.GetAPIVersion() == "v1" {
		items, _ := m["items"].([]interface{})
		for i, item := range items {
			im, _ := item.(map[string]interface{})
			l.add(fmt.Sprintf("%s, item %d", where, i+1), im)
		}
		return
	}
	if missing := missingField(obj); missing != "" {
		l.errs = append(l.errs, fmt.Errorf("%s: missing %s; every object needs apiVersion, kind and metadata.name", where, missing))
		return
	}
	if l.digest != "" {
		annotations := obj.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[v1alpha1.AnnotationSOPSDigest] = l.digest
		obj.SetAnnotations(annotations)
	}
	l.objs = append(l.objs, obj)
}

func missingField(obj *unstructured.Unstructured) string {
	switch {
	case obj.GetAPIVersion() == "":
		return "apiVersion"
	case obj.GetKind() == "":
		return "kind"
	case obj.GetName() == "":
		return "metadata.name"
	}
	return ""
}

func (l *loader) fail(path string, err error) {
	l.errs = append(l.errs, fmt.Errorf("%s: %w", l.rel(path), err))
}

// rel names path for users: relative to the checkout root.
func (l *loader) rel(path string) string { return relTo(l.root, path) }

func relTo(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return path
}

// resolveFile is the real path of a manifest file the walk found. A
// regular file is its own: the walk starts in the real manifest directory
// and does not follow links, and resolving each file again cost a quarter
// of a 20-file load in system calls. A symbolic link is resolved and must
// stay inside the checkout.
func (l *loader) resolveFile(path string, regular bool) (string, error) {
	if regular {
		return path, nil
	}
	real, err := realPath(path)
	if err != nil {
		return "", err
	}
	if !within(l.root, real) {
		return "", errors.New("symbolic link points outside the repository checkout")
	}
	return real, nil
}

// realPath returns the absolute path with symbolic links resolved.
func realPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// within reports whether path is root or below it; both must be real paths.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
