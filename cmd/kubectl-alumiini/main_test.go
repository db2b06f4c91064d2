package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{30 * time.Second, "30s"}, {5 * time.Minute, "5m"}, {3 * time.Hour, "3h"},
		{72 * time.Hour, "3d"}, {-20 * time.Second, "in 20s"},
	} {
		if got := age(now.Add(-tc.ago), now); got != tc.want {
			t.Errorf("age(%v ago) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := age(time.Time{}, now); got != "-" {
		t.Errorf("age(zero) = %q, want -", got)
	}
}

func TestSource(t *testing.T) {
	for _, tc := range []struct {
		spec v1alpha1.GitRepositorySpec
		want string
	}{
		{v1alpha1.GitRepositorySpec{URL: "https://h/r.git"}, "https://h/r.git@main"},
		{v1alpha1.GitRepositorySpec{URL: "u", Branch: "dev", Path: "./apps/"}, "u@dev/./apps"},
		{v1alpha1.GitRepositorySpec{URL: "u", Tag: "v1", Path: "/"}, "u@v1"},
		{v1alpha1.GitRepositorySpec{URL: "u", Branch: "b", Commit: strings.Repeat("ab", 20)}, "u@abababababab"},
	} {
		if got := source(&v1alpha1.GitRepository{Spec: tc.spec}); got != tc.want {
			t.Errorf("source(%+v) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

func TestColourOnlyOnATerminal(t *testing.T) {
	d := "--- live\n+++ git\n-a\n+b\n c\n"
	if got := colourDiff(painter(false), d); got != d {
		t.Errorf("plain diff changed: %q", got)
	}
	got := colourDiff(painter(true), d)
	if !strings.Contains(got, "\x1b[31m-a\x1b[0m\n") || !strings.Contains(got, "\x1b[32m+b\x1b[0m\n") || !strings.Contains(got, "--- live\n") {
		t.Errorf("coloured diff = %q", got)
	}
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
}

func TestExportLeavesDefaultsToTheAPIServer(t *testing.T) {
	u, err := newRepoObject("ns", "apps", v1alpha1.GitRepositorySpec{URL: "u", Interval: metav1.Duration{Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	spec := u.Object["spec"].(map[string]any)
	if spec["interval"] != "1m0s" || spec["timeout"] != nil || spec["reconcileInterval"] != nil || u.Object["status"] != nil {
		t.Errorf("exported object = %v", u.Object)
	}
}

func TestVersionsMustMatch(t *testing.T) {
	for _, tc := range []struct {
		controller string
		ok         bool
	}{{version, true}, {"v9.9.9", false}, {"", false}} {
		if got := checkVersions(tc.controller); got.OK != tc.ok {
			t.Errorf("checkVersions(%q) = %+v, want ok=%v", tc.controller, got, tc.ok)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--version"}, exitOK},
		{[]string{"--no-such-flag"}, exitError},
		{[]string{"sync"}, exitError}, // NAME missing
		{[]string{"create", "x", "--url", "u", "--export", "-o", "toml"}, exitError},
		{[]string{"create", "x", "--url", "u", "--export", "-n", "demo", "--kubeconfig", "/nonexistent"}, exitOK},
	} {
		var out, errOut bytes.Buffer
		if got := run(tc.args, &out, &errOut); got != tc.code {
			t.Errorf("run(%v) = %d, want %d\n%s%s", tc.args, got, tc.code, out.String(), errOut.String())
		}
	}
}
