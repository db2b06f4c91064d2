package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoadManifests parses a checkout of 20 ConfigMaps, as a push to a
// benchmark repository has the load step do.
func BenchmarkLoadManifests(b *testing.B) {
	root := b.TempDir()
	for i := 0; i < 20; i++ {
		cm := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%02d\n  namespace: ns\ndata:\n  value: \"%d\"\n", i, i)
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("cm-%02d.yaml", i)), []byte(cm), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		objs, errs, _ := LoadManifestsReading(root, root, nil)
		if len(objs) != 20 || len(errs) != 0 {
			b.Fatalf("%d objects, errors %v", len(objs), errs)
		}
	}
}
