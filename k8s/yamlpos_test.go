package k8s

import (
	"strings"
	"testing"
)

func TestYAMLErrorsNameFileLineAndColumn(t *testing.T) {
	tests := []struct {
		name, data string
		doc        int
		want       string
	}{
		{"mapping value in the first document",
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a: b\n", 1,
			"deploy/app.yaml:4:3: mapping values are not allowed in this context"},
		{"lines count across documents",
			"a: 1\n---\nb: 2\n---\n# c\nkind: x\n  name: y\n", 3,
			"deploy/app.yaml:7:3: mapping values are not allowed in this context"},
		{"a leading separator starts no document",
			"---\nx: 1\n  y: 2\n", 1,
			"deploy/app.yaml:3:3: mapping values are not allowed in this context"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := positionedYAMLError("deploy/app.yaml", []byte(tt.data), tt.doc)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error %v, want prefix %q", err, tt.want)
			}
		})
	}
	if err := positionedYAMLError("ok.yaml", []byte("a: 1\n"), 1); err != nil {
		t.Fatalf("valid YAML: %v", err)
	}
}
