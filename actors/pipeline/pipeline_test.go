package pipeline

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := map[string]string{
		"https://user:token@git.example/org/repo.git": "https://git.example/org/repo.git",
		"https://git.example/org/repo.git":            "https://git.example/org/repo.git",
		"ssh://git@git.example/org/repo.git":          "ssh://git.example/org/repo.git",
		"git@git.example:org/repo.git":                "git@git.example:org/repo.git",
	}
	for in, want := range tests {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFailureMessage(t *testing.T) {
	parse := failureMessage("0123456789abcdef", []string{"deploy/bad.yaml: document 1: invalid YAML.", "x"}, true)
	for _, want := range []string{"Commit 0123456", "deploy/bad.yaml", "1 more problem", "fix the manifests in git", "nothing was pruned"} {
		if !strings.Contains(parse, want) {
			t.Errorf("parse failure message %q lacks %q", parse, want)
		}
	}
	apply := failureMessage("0123456789abcdef", []string{"ConfigMap ns/a: forbidden"}, false)
	if strings.Contains(apply, "fix the manifests") || !strings.Contains(apply, "retried") {
		t.Errorf("apply failure message %q should say the failed objects are retried, not blame git", apply)
	}
	if n := strings.Count(apply, "."); n < 1 || !strings.HasSuffix(apply, ".") {
		t.Errorf("message %q is not one sentence", apply)
	}
}

func TestEventMessageListsEveryProblemBounded(t *testing.T) {
	problems := make([]string, 15)
	for i := range problems {
		problems[i] = "p" + string(rune('a'+i))
	}
	got := eventMessage("Sync failed.", problems)
	if !strings.Contains(got, "pa; pb") || !strings.Contains(got, "and 5 more") || strings.Contains(got, "pk") {
		t.Fatalf("eventMessage = %q", got)
	}
	if got := eventMessage("one", []string{"only"}); got != "one" {
		t.Fatalf("a single problem is already the message, got %q", got)
	}
}
