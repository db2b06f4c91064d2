package k8s

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadManifestsReadingListsWhatTheBuildRead(t *testing.T) {
	root := writeTree(t, map[string]string{
		"apps/a/kustomization.yaml":      "resources: [../../bases/web, cm.yaml]\n",
		"apps/a/cm.yaml":                 cm("a"),
		"bases/web/kustomization.yaml":   "resources: [web.yaml]\n",
		"bases/web/web.yaml":             cm("web"),
		"bases/other/kustomization.yaml": "resources: [x.yaml]\n",
		"bases/other/x.yaml":             cm("x"),
		"shared/s.yaml":                  cm("s"),
		"apps/c/plain.yaml":              cm("plain"),
	})
	if err := os.Symlink("../../shared/s.yaml", filepath.Join(root, "apps/c/link.yaml")); err != nil {
		t.Fatal(err)
	}

	objs, errs, read := LoadManifestsReading(root, filepath.Join(root, "apps/a"), nil)
	if len(errs) > 0 || !slices.Equal(names(objs), []string{"ConfigMap/web", "ConfigMap/a"}) {
		t.Fatalf("kustomize build: objects %v, errors %v", names(objs), errs)
	}
	for _, want := range []string{"bases/web/kustomization.yaml", "bases/web/web.yaml"} {
		if !slices.Contains(read, want) {
			t.Errorf("read %v lacks %s", read, want)
		}
	}
	for _, p := range read {
		if strings.HasPrefix(p, "bases/other") || strings.HasPrefix(p, "apps/a/") || strings.HasPrefix(p, "..") || filepath.IsAbs(p) {
			t.Errorf("read lists %s: unused, under the path, or outside the checkout", p)
		}
	}

	_, errs, read = LoadManifestsReading(root, filepath.Join(root, "apps/c"), nil)
	if len(errs) > 0 || !slices.Equal(read, []string{"shared/s.yaml"}) {
		t.Fatalf("plain files: read %v (errors %v), want the symbolic link's target only", read, errs)
	}
	if _, _, read = LoadManifestsReading(root, root, nil); read == nil || len(read) != 0 {
		t.Fatalf("the whole repository: read %v, want empty (every change counts)", read)
	}

	// Without recording, nothing changes for the ordinary loader.
	if objs, errs := LoadManifestsIn(root, filepath.Join(root, "apps/a")); len(objs) != 2 || len(errs) != 0 {
		t.Fatalf("LoadManifestsIn: %v, %v", names(objs), errs)
	}
}

func TestInputsChanged(t *testing.T) {
	read := []string{"apps/a/kustomization.yaml", "bases/web/kustomization.yaml", "bases/web/web.yaml", "links/base/x.yaml"}
	tests := []struct {
		name    string
		changed []string
		dir     string
		want    bool
	}{
		{"unknown changes", nil, "apps/a", true},
		{"no changes", []string{}, "apps/a", false},
		{"a file under spec.path", []string{"apps/a/new.yaml"}, "apps/a", true},
		{"spec.path with a trailing slash", []string{"apps/a/new.yaml"}, "apps/a/", true},
		{"spec.path with ./", []string{"apps/a/new.yaml"}, "./apps/a", true},
		{"another app", []string{"apps/b/cm.yaml", "apps/ab/cm.yaml"}, "apps/a", false},
		{"a base the build read", []string{"README.md", "bases/web/web.yaml"}, "apps/a", true},
		{"a base the build did not read", []string{"bases/other/x.yaml"}, "apps/a", false},
		{"a directory symlink on the way to a file read", []string{"links/base"}, "apps/a", true},
		{"the repository root takes every change", []string{"README.md"}, "", true},
		{"the repository root as .", []string{"docs/x.md"}, ".", true},
	}
	for _, tt := range tests {
		if got := InputsChanged(tt.changed, tt.dir, read); got != tt.want {
			t.Errorf("%s: InputsChanged(%v, %q) = %v, want %v", tt.name, tt.changed, tt.dir, got, tt.want)
		}
	}
}
