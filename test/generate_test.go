package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/false-systems/alumiini/test/testenv"
)

// TestGeneratedFilesAreFresh regenerates the CRD and deepcopy code into a
// scratch copy and fails when they differ from what is committed: a type
// change without `make generate` must not land.
func TestGeneratedFilesAreFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen")
	}
	root := testenv.RepoRoot()
	out := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "generate", "GEN_OUT="+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make generate: %v\n%s", err, b)
	}
	for _, committed := range []string{
		"deploy/crd/alumiini.false.systems_gitrepositories.yaml",
		"crd/v1alpha1/zz_generated.deepcopy.go",
	} {
		want, err := os.ReadFile(filepath.Join(root, committed))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, filepath.Base(committed)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("%s is stale: run `make generate` and commit the result", committed)
		}
	}
}
