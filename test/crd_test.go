package test

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func gitRepo(ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "GitRepository",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
}

func TestCRDRoundTripFillsDefaults(t *testing.T) {
	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	created, err := client.Create(ctx, gitRepo(ns, "apps", map[string]any{
		"url":  "https://git.example.com/org/apps.git",
		"path": "clusters/prod",
	}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create valid GitRepository: %v", err)
	}
	var repo v1alpha1.GitRepository
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(created.Object, &repo); err != nil {
		t.Fatal(err)
	}
	s := repo.Spec
	if s.Branch != "main" || s.Interval.Duration != 5*time.Minute || s.ReconcileInterval.Duration != 10*time.Minute ||
		s.Timeout.Duration != 3*time.Minute || s.Prune == nil || !*s.Prune || s.Drift != v1alpha1.DriftCorrect {
		t.Fatalf("defaults not filled: %+v", s)
	}
	if s.URL != "https://git.example.com/org/apps.git" || s.Path != "clusters/prod" {
		t.Fatalf("fields changed on round trip: %+v", s)
	}
}

func TestCRDAcceptsEveryURLForm(t *testing.T) {
	ns := env.Namespace(t)
	urls := []string{
		"https://github.com/org/repo.git",
		"http://127.0.0.1:8080/repo.git",
		"ssh://git@github.com/org/repo.git",
		"git@github.com:org/repo.git",
		"file:///srv/git/repo.git",
	}
	client := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	for i, u := range urls {
		name := "r" + string(rune('a'+i))
		if _, err := client.Create(context.Background(), gitRepo(ns, name, map[string]any{"url": u}), metav1.CreateOptions{}); err != nil {
			t.Errorf("url %q rejected: %v", u, err)
		}
	}
}

func TestCRDRejectsInvalidSpecsNamingTheField(t *testing.T) {
	ns := env.Namespace(t)
	tests := []struct {
		name  string
		spec  map[string]any
		field string
	}{
		{"no url", map[string]any{"branch": "main"}, "spec.url"},
		{"url of unknown form", map[string]any{"url": "ftp://example.com/repo"}, "spec.url"},
		{"interval in words", map[string]any{"url": "https://h/r.git", "interval": "5 minutes"}, "spec.interval"},
		{"bad reconcileInterval", map[string]any{"url": "https://h/r.git", "reconcileInterval": "soon"}, "spec.reconcileInterval"},
		{"bad timeout", map[string]any{"url": "https://h/r.git", "timeout": "-1"}, "spec.timeout"},
		{"path escapes", map[string]any{"url": "https://h/r.git", "path": "../etc"}, "spec.path"},
		{"path escapes midway", map[string]any{"url": "https://h/r.git", "path": "a/../../x"}, "spec.path"},
		{"absolute path", map[string]any{"url": "https://h/r.git", "path": "/etc"}, "spec.path"},
		{"unknown drift mode", map[string]any{"url": "https://h/r.git", "drift": "Fix"}, "spec.drift"},
		{"commit not a sha", map[string]any{"url": "https://h/r.git", "commit": "HEAD~1"}, "spec.commit"},
		{"short commit", map[string]any{"url": "https://h/r.git", "commit": "abc1234"}, "spec.commit"},
	}
	client := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := gitRepo(ns, "bad"+string(rune('a'+i)), tt.spec)
			_, err := client.Create(context.Background(), obj, metav1.CreateOptions{})
			if err == nil {
				t.Fatalf("spec %v was accepted", tt.spec)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("message does not name %s: %v", tt.field, err)
			}
		})
	}
}

func TestCRDStatusIsASubresource(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	client := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns)
	obj := gitRepo(ns, "apps", map[string]any{"url": "https://h/r.git"})
	obj.Object["status"] = map[string]any{"phase": "Synced"}
	created, err := client.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedString(created.Object, "status", "phase"); found {
		t.Fatal("status was written through the main resource; it must need the status subresource")
	}
	if err := unstructured.SetNestedField(created.Object, "Pending", "status", "phase"); err != nil {
		t.Fatal(err)
	}
	updated, err := client.UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if phase, _, _ := unstructured.NestedString(updated.Object, "status", "phase"); phase != "Pending" {
		t.Fatalf("status.phase = %q after UpdateStatus", phase)
	}
}
