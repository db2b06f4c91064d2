package k8s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The fuzz targets below cover the parsers that read what a git repository
// holds, which whoever can push to it controls. Their seeds run as ordinary
// tests; `make fuzz` explores further, and inputs that once failed are kept
// in testdata/fuzz.

// FuzzLoadManifests feeds one file, as YAML or as JSON, to the manifest
// loader: it must never panic, and every object it returns must have what
// the applier relies on.
func FuzzLoadManifests(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkind: Secret\n"), false)
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"kind":"List","apiVersion":"v1","items":[7]}]}`), true)
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n- null\n"), false)
	f.Add([]byte("a: &a [*a]\n"), false)
	f.Add([]byte("metadata: 3\napiVersion: [1]\nkind: {}\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		dir := t.TempDir()
		name := "m.yaml"
		if asJSON {
			name = "m.json"
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		objs, errs := LoadManifests(dir)
		for _, o := range objs {
			if o.GetAPIVersion() == "" || o.GetKind() == "" || o.GetName() == "" || o.GetKind() == "List" && o.GetAPIVersion() == "v1" {
				t.Fatalf("loader returned an incomplete object: %v", o.Object)
			}
		}
		for _, err := range errs {
			if !strings.HasPrefix(err.Error(), name) {
				t.Fatalf("error does not name the file: %v", err)
			}
		}
	})
}

// FuzzKustomizePathGate: whatever path kustomize asks for, the checkout's
// file system lets it through only when it resolves inside the checkout,
// through symbolic links too.
func FuzzKustomizePathGate(f *testing.F) {
	for _, p := range []string{"base/kustomization.yaml", "../secret", "out/secret", "base/../../secret", "/etc/passwd",
		"base/./up/secret", "", ".", "out", "base//x", "base/../base"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		parent := t.TempDir()
		root := filepath.Join(parent, "checkout")
		for _, d := range []string{filepath.Join(root, "base"), filepath.Join(parent, "outside")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for link, target := range map[string]string{"out": "../outside", "base/up": "../.."} {
			if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"secret", "outside/secret", "checkout/base/kustomization.yaml"} {
			if err := os.WriteFile(filepath.Join(parent, f), []byte("x: 1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		root, _ = filepath.EvalSymlinks(root)
		var refused error
		fs := checkoutFS{FileSystem: filesys.MakeFsOnDisk(), root: root, refused: &refused}
		full := path
		if !filepath.IsAbs(path) {
			full = filepath.Join(root, path)
		}
		if _, err := fs.ReadFile(full); err == nil {
			real, rerr := realPath(full)
			if rerr != nil || !within(root, real) {
				t.Fatalf("read %q (%q) outside the checkout %s", path, real, root)
			}
		}
	})
}

// FuzzCheckKustomization: any kustomization is either refused or free of
// remote references.
func FuzzCheckKustomization(f *testing.F) {
	f.Add([]byte("resources:\n- ../base\n- https://example.com/x.yaml\n"))
	f.Add([]byte("bases: [github.com/org/repo//dir?ref=v1]\ncomponents: [git@github.com:o/r.git]\n"))
	f.Add([]byte("openapi: {path: x.json}\n"))
	f.Add([]byte("configMapGenerator:\n- name: x\n  files: [http://example.com/f]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if checkKustomization(data) != nil {
			return
		}
		var k map[string]interface{}
		if err := yaml.Unmarshal(data, &k); err != nil {
			return
		}
		for _, ref := range kustomizationRefs(k) {
			if isRemote(ref) {
				t.Fatalf("remote reference %q let through", ref)
			}
		}
	})
}
