package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// tenConfigMaps is a commit of ConfigMaps prefix-0..prefix-9 with value v
// that deletes the files of the names in gone.
func tenConfigMaps(ns, prefix, v string, gone ...string) map[string]string {
	files := map[string]string{}
	for i := range 10 {
		name := fmt.Sprintf("%s-%d", prefix, i)
		files[name+".yaml"] = ""
		if !slices.Contains(gone, name) {
			files[name+".yaml"] = configMapYAML(name, ns, v)
		}
	}
	return files
}

// wantConfigMaps waits until the namespace holds exactly the ConfigMaps
// of want (name → value) among those named prefix-*.
func wantConfigMaps(t *testing.T, ns, what string, want map[string]string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() error {
		list, err := env.Kube.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: v1alpha1.LabelName})
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, cm := range list.Items {
			got[cm.Name] = cm.Data["value"]
		}
		for name, v := range want {
			if got[name] != v {
				return fmt.Errorf("%s: ConfigMap %s = %q, want %q", what, name, got[name], v)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("%s: %d ConfigMaps, want %d: %v", what, len(got), len(want), got)
		}
		return nil
	})
}

// TestAPIFaultsLoseNothing: with the controller's connection to the API
// server slowed (500 ms per response chunk), cut mid-response over and
// over, and refused, pushes still converge once the faults end: every
// object git has is applied, what left git is pruned and nothing else, and
// the process never exits. ALUMIINI_SOAK=1 runs five rounds.
func TestAPIFaultsLoseNothing(t *testing.T) {
	ns := env.Namespace(t)
	repo := gitserver.New(t).CreateRepo(t, "apps")
	commit := repo.CommitStrings("first", tenConfigMaps(ns, "cm", "1"))
	proxy := newAPIProxy(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns, "--kubeconfig", proxy.kubeconfig(t))
	ctrl.waitReady(t)
	pid := ctrl.cmd.Process.Pid
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h", "timeout": "30s"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, 60*time.Second)

	k := 0
	step := func(name, value string, fault func(), heal func()) {
		t.Helper()
		fault()
		k++ // each commit changes every value, deletes one file and restores the one deleted before
		files := tenConfigMaps(ns, "cm", value, fmt.Sprintf("cm-%d", k%10))
		commit = repo.CommitStrings(name, files)
		if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), commit); code != http.StatusAccepted {
			t.Fatalf("%s: webhook reply %d %s", name, code, body)
		}
		heal()
		want := map[string]string{}
		for f, content := range files {
			if content != "" {
				want[strings.TrimSuffix(f, ".yaml")] = value
			}
		}
		wantConfigMaps(t, ns, name, want)
		waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, 2*time.Minute)
		if ctrl.hasExited() || ctrl.cmd.Process.Pid != pid {
			t.Fatalf("%s: the controller exited", name)
		}
	}
	failures := func() float64 { return ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`) }
	waitFailures := func(before float64) {
		testenv.Eventually(t, time.Minute, func() error {
			if failures() <= before {
				return fmt.Errorf("no failed sync yet")
			}
			return nil
		})
	}

	rounds := 1
	if os.Getenv("ALUMIINI_SOAK") == "1" {
		rounds = 5
	}
	for r := range rounds {
		v := func(i int) string { return fmt.Sprint(3*r + i) }
		step("slow", v(2), func() { proxy.slow(500 * time.Millisecond) }, func() {})
		proxy.slow(0)

		var before float64
		step("cut mid-response", v(3), func() { before = failures(); proxy.dropping(8 << 10) }, func() {
			waitFailures(before)
			proxy.dropping(0)
		})
		step("refused", v(4), func() { before = failures(); proxy.cut() }, func() {
			waitFailures(before)
			proxy.restore(t)
		})
	}
}

// TestSIGKILLMidApplyLosesNothing: the controller is killed (SIGKILL) in
// the middle of applying a 300-object change that also deletes a file; a
// new controller converges: every object at the new commit, and the
// object whose file was deleted still pruned.
func TestSIGKILLMidApplyLosesNothing(t *testing.T) {
	ns := env.Namespace(t)
	repo := gitserver.New(t).CreateRepo(t, "big")
	files := func(v string) map[string]string { return bigRepoFiles(ns, v) }
	first := files("1")
	first["gone.yaml"] = configMapYAML("gone", ns, "1")
	commit := repo.CommitStrings("first", first)
	proxy := newAPIProxy(t)
	ctrl := startController(t, "--watch-namespace", ns, "--kubeconfig", proxy.kubeconfig(t), "--webhook-secret-file", secretFile(t))
	ctrl.waitReady(t)
	createRepo(t, ns, "big", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "big", v1alpha1.PhaseSynced, commit, 2*time.Minute)

	// Slow the controller's API connection so that the kill lands mid-apply.
	proxy.slow(20 * time.Millisecond)
	second := files("2")
	second["gone.yaml"] = ""
	commit = repo.CommitStrings("second", second)
	pushBigCommit(t, ctrl.webhook, repo, commit, func() string { v, _ := configMapValue(ns, "cm-00-0"); return v })
	if err := ctrl.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-ctrl.done
	if v, _ := configMapValue(ns, "cm-29-9"); v == "2" {
		t.Fatal("the apply finished before the kill: the test proves nothing; slow the proxy more")
	}

	proxy.slow(0)
	next := startController(t, "--watch-namespace", ns, "--kubeconfig", proxy.kubeconfig(t))
	next.waitReady(t)
	waitPhase(t, ns, "big", v1alpha1.PhaseSynced, commit, 2*time.Minute)
	wantConfigMaps(t, ns, "after the restart", bigRepoObjects("2"))
}

// bigRepoFiles is a 300-object repository: 30 files of 10 ConfigMaps,
// cm-FF-I, each with data.value v.
func bigRepoFiles(ns, v string) map[string]string {
	out := map[string]string{}
	for f := range 30 {
		var docs []string
		for i := range 10 {
			docs = append(docs, configMapYAML(fmt.Sprintf("cm-%02d-%d", f, i), ns, v))
		}
		out[fmt.Sprintf("part-%02d.yaml", f)] = strings.Join(docs, "---\n")
	}
	return out
}

// pushBigCommit sends the webhook for commit of a bigRepoFiles repository
// whose values become "2", and waits until the apply has begun: first
// reads cm-00-0's value.
func pushBigCommit(t *testing.T, webhook string, repo *gitserver.Repo, commit string, first func() string) {
	t.Helper()
	if code, body := pushGitHub(t, webhook, repo.URL(), commit); code != http.StatusAccepted {
		t.Fatalf("webhook reply %d %s", code, body)
	}
	testenv.Eventually(t, time.Minute, func() error {
		if first() != "2" {
			return fmt.Errorf("the apply has not started")
		}
		return nil
	})
}

// bigRepoObjects is what bigRepoFiles(ns, v) applies: name -> data.value.
func bigRepoObjects(v string) map[string]string {
	want := map[string]string{}
	for f := range 30 {
		for i := range 10 {
			want[fmt.Sprintf("cm-%02d-%d", f, i)] = v
		}
	}
	return want
}
