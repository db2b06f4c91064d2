package k8s

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// writeTree creates files (path → content) under a fresh directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func cm(name string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n"
}

// names lists objects as Kind/name in the order returned.
func names(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func TestLoadManifests(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    []string
		wantErr []string // substrings, one per expected error, in order
	}{{
		name: "multi-document file with empty and comment-only documents",
		files: map[string]string{
			"all.yaml": "---\n---\n# only a comment\n---\n" + cm("one") + "---\n\n---\n" + cm("two") + "...\n",
		},
		want: []string{"ConfigMap/one", "ConfigMap/two"},
	}, {
		name: "invalid YAML names file and document index and keeps the good documents",
		files: map[string]string{
			"a.yaml":     cm("first") + "---\nkind: [unclosed\n---\n" + cm("third"),
			"sub/b.yaml": cm("other"),
		},
		want:    []string{"ConfigMap/first", "ConfigMap/third", "ConfigMap/other"},
		wantErr: []string{"a.yaml:"},
	}, {
		name: "missing apiVersion, kind or name",
		files: map[string]string{"bad.yml": "kind: ConfigMap\nmetadata: {name: a}\n---\n" +
			"apiVersion: v1\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"},
		wantErr: []string{"bad.yml: document 1: missing apiVersion", "bad.yml: document 2: missing kind",
			"bad.yml: document 3: missing metadata.name"},
	}, {
		name:    "a document that is not a mapping",
		files:   map[string]string{"list.yaml": "- a\n- b\n"},
		wantErr: []string{"list.yaml: document 1: not a Kubernetes object"},
	}, {
		name: "stable lexical order across directories",
		files: map[string]string{
			"b.yaml": cm("b"), "a/z.yaml": cm("az"), "a/b/c.yml": cm("abc"), "A.json": `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"upper"}}`,
		},
		want: []string{"ConfigMap/upper", "ConfigMap/abc", "ConfigMap/az", "ConfigMap/b"},
	}, {
		name: "JSON object and JSON List, with tabs and large integers",
		files: map[string]string{
			"one.json":  "{\n\t\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"j\"}\n}",
			"list.json": `{"apiVersion":"v1","kind":"List","items":[` + `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}},{"apiVersion":"v1","kind":"Service"}]}`,
		},
		want:    []string{"Secret/s", "ConfigMap/j"},
		wantErr: []string{"list.json: document 1, item 2: missing metadata.name"},
	}, {
		name: "non-manifest and hidden files are ignored",
		files: map[string]string{
			"README.md": "# docs", "deploy.sh": "echo", "app.yaml": cm("app"),
			".github/workflows/ci.yml": "on: push\n", ".pre-commit-config.yaml": "repos: []\n",
		},
		want: []string{"ConfigMap/app"},
	}, {
		name: "a subdirectory with a kustomization is built by kustomize",
		files: map[string]string{
			"plain.yaml":                  cm("plain"),
			"kust/kustomization.yaml":     "resources: [cm.yaml]\nnamePrefix: k-\n",
			"kust/cm.yaml":                cm("inner"),
			"kust/patch-not-a-object.yml": "data: {a: b}\n",
		},
		want: []string{"ConfigMap/k-inner", "ConfigMap/plain"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, errs := LoadManifests(writeTree(t, tt.files))
			if got := names(objs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("objects = %v, want %v", got, tt.want)
			}
			if len(errs) != len(tt.wantErr) {
				t.Fatalf("errors = %v, want %d matching %q", errs, len(tt.wantErr), tt.wantErr)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.wantErr[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, err, tt.wantErr[i])
				}
			}
		})
	}
}

func TestLoadManifestsKeepsLargeIntegers(t *testing.T) {
	dir := writeTree(t, map[string]string{"d.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 3\n  x: 9007199254740993\n"})
	objs, errs := LoadManifests(dir)
	if len(errs) != 0 || len(objs) != 1 {
		t.Fatalf("objects %v, errors %v", names(objs), errs)
	}
	spec := objs[0].Object["spec"].(map[string]interface{})
	if spec["replicas"] != int64(3) || spec["x"] != int64(9007199254740993) {
		t.Errorf("integers decoded as %T %v and %T %v, want exact int64", spec["replicas"], spec["replicas"], spec["x"], spec["x"])
	}
}

func TestLoadManifestsKustomize(t *testing.T) {
	root := writeTree(t, map[string]string{
		"base/kustomization.yaml": "resources: [deploy.yaml]\nconfigMapGenerator:\n- name: settings\n  literals: [mode=prod]\n",
		"base/deploy.yaml":        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
		"overlay/kustomization.yml": "resources: [../base]\nnamespace: shop\n" +
			"patches:\n- path: replicas.yaml\n",
		"overlay/replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 3}\n",
		"overlay/ignored.yaml":  cm("not-listed-in-the-kustomization"),
	})
	objs, errs := LoadManifestsIn(root, filepath.Join(root, "overlay"))
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	got := names(objs)
	if len(got) != 2 || got[0] != "Deployment/web" || !strings.HasPrefix(got[1], "ConfigMap/settings-") {
		t.Fatalf("objects = %v, want the Deployment and the generated ConfigMap", got)
	}
	for _, o := range objs {
		if o.GetNamespace() != "shop" {
			t.Errorf("%s namespace %q, want shop", o.GetName(), o.GetNamespace())
		}
	}
	if r, _, _ := unstructured.NestedInt64(objs[0].Object, "spec", "replicas"); r != 3 {
		t.Errorf("replicas %d, want the overlay's patch (3)", r)
	}

	// The same overlay loaded as its own root cannot reach ../base.
	if _, errs := LoadManifests(filepath.Join(root, "overlay")); len(errs) != 1 || !strings.Contains(errs[0].Error(), "outside the repository checkout") {
		t.Errorf("errors = %v, want one saying the base is outside the checkout", errs)
	}
}

func TestLoadManifestsRefusesRemoteAndEscapes(t *testing.T) {
	tests := []struct {
		name, kustomization, want string
	}{
		{"https base", "resources:\n- https://github.com/org/repo//deploy?ref=v1\n", "remote reference"},
		{"github shorthand", "resources: [github.com/org/repo/deploy]\n", "remote reference"},
		{"scp-like git", "components: [git@example.com:org/repo.git]\n", "remote reference"},
		{"remote patch file", "resources: [cm.yaml]\npatches:\n- path: http://example.com/p.yaml\n", "remote reference"},
		{"remote generator file", "configMapGenerator:\n- name: c\n  files: [k=https://example.com/f]\n", "remote reference"},
		{"custom openapi schema", "resources: [cm.yaml]\nopenapi: {path: schema.json}\n", "openapi field is not supported"},
		{"file outside the checkout", "resources: [/etc/hostname]\n", "outside the repository checkout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTree(t, map[string]string{"kustomization.yaml": tt.kustomization, "cm.yaml": cm("c")})
			objs, errs := LoadManifests(dir)
			if len(objs) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.want) {
				t.Fatalf("objects %v, errors %v; want one error containing %q", names(objs), errs, tt.want)
			}
		})
	}
}

func TestLoadManifestsSymlinks(t *testing.T) {
	outside := writeTree(t, map[string]string{"secret.yaml": cm("outside")})
	dir := writeTree(t, map[string]string{"real/cm.yaml": cm("inside")})
	if err := os.Symlink(filepath.Join(dir, "real", "cm.yaml"), filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(dir, "escape.yaml")); err != nil {
		t.Fatal(err)
	}
	objs, errs := LoadManifests(dir)
	if got := names(objs); !reflect.DeepEqual(got, []string{"ConfigMap/inside", "ConfigMap/inside"}) {
		t.Errorf("objects = %v, want the in-checkout link followed and the escaping one not", got)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "escape.yaml: symbolic link points outside") {
		t.Errorf("errors = %v, want one naming escape.yaml", errs)
	}
}

func TestLoadManifestsBadPath(t *testing.T) {
	root := writeTree(t, map[string]string{"file.yaml": cm("x")})
	for _, dir := range []string{filepath.Join(root, "missing"), filepath.Join(root, "file.yaml"), filepath.Dir(root)} {
		objs, errs := LoadManifestsIn(root, dir)
		if len(objs) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "spec.path") {
			t.Errorf("LoadManifestsIn(%s) = %v, %v; want one error pointing at spec.path", dir, names(objs), errs)
		}
	}
}

func TestLoadManifestsRefusesHugeFiles(t *testing.T) {
	huge := cm("big") + "  padding: \"" + strings.Repeat("x", maxManifestBytes) + "\"\n"
	root := writeTree(t, map[string]string{"a.yaml": cm("a"), "big.yaml": huge})
	objs, errs := LoadManifests(root)
	if len(objs) != 1 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "big.yaml") || !strings.Contains(errs[0].Error(), "split it") {
		t.Fatalf("LoadManifests = %v, %v; want a loaded and one error naming big.yaml", names(objs), errs)
	}
}
