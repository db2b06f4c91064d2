package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestGitFaultsReportOneSentenceBackOffAndRecover: the git server refusing
// connections, answering 500s, and answering slower than spec.timeout. Each
// time the repository shows one actionable sentence in status.message, the
// retries back off (a handful of failed syncs, not a tight loop), and once
// the server is healthy the first retry applies the new commit (issue 16).
func TestGitFaultsReportOneSentenceBackOffAndRecover(t *testing.T) {
	ns, repo, first := appsRepo(t)
	u, err := url.Parse(repo.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	git := repo.Server()
	ctrl := startController(t, "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": u.String(), "interval": "1h", "reconcileInterval": "1h", "timeout": "3s"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	faults := []struct {
		name         string
		inject, heal func()
		want         string
	}{
		{"refused", proxy.cut, func() { proxy.restore(t) }, "connection refused; check the host and port in spec.url"},
		{"http 500", func() { git.FailWith(500) }, func() { git.FailWith(0) }, "the git server failed with HTTP 500"},
		{"slower than spec.timeout", func() { git.Delay(10 * time.Second) }, func() { git.Delay(0) }, "timed out; check that the server is reachable, or raise spec.timeout"},
	}
	for i, f := range faults {
		commit := repo.CommitStrings(f.name, map[string]string{"a.yaml": configMapYAML("a", ns, fmt.Sprint(i+2))})
		f.inject()
		start, before := time.Now(), ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`)
		requestSync(t, ns, "apps")
		testenv.Eventually(t, 60*time.Second, func() error {
			st := getRepo(t, ns, "apps").Status
			if st.Phase != v1alpha1.PhaseFailed || !strings.Contains(st.Message, f.want) {
				return fmt.Errorf("%s: phase %q message %q, want Failed with %q", f.name, st.Phase, st.Message, f.want)
			}
			if n := ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`) - before; n < 3 {
				return fmt.Errorf("%s: %.0f failed syncs so far, want 3 retries", f.name, n)
			}
			return nil
		})
		msg := getRepo(t, ns, "apps").Status.Message
		if strings.Contains(msg, "\n") || !strings.Contains(msg, u.String()) {
			t.Errorf("%s: message %q is not one sentence naming %s", f.name, msg, u.String())
		}
		f.heal()
		healed := ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`)
		if n, took := healed-before, time.Since(start); n > 8 {
			t.Errorf("%s: %.0f failed syncs in %v: retries do not back off", f.name, n, took)
		}
		waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, commit, 60*time.Second)
		// A retry already in flight when the server healed may still fail; the next one must not.
		if n := ctrl.metricValue(t, "alumiini_syncs_total", `result="failure"`) - healed; n > 1 {
			t.Errorf("%s: %.0f more failed syncs after the server healed, want the first retry to succeed", f.name, n)
		}
		if v, _ := configMapValue(ns, "a"); v != fmt.Sprint(i+2) {
			t.Errorf("%s: ConfigMap a = %q after recovery, want %d", f.name, v, i+2)
		}
	}
}

// requestSync asks for a sync now, as `alumiini sync` does.
func requestSync(t testing.TB, ns, name string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.AnnotationRequestedAt, time.Now().Format(time.RFC3339Nano))
	if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Patch(context.Background(), name,
		types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestUnwritableCacheDirectory: --cache-dir turns into a file under the
// running controller (chmod does not stop root, which runs the tests in CI),
// so no checkout can be written. The repository fails with one sentence
// naming the directory, the controller keeps running, and the next sync
// after the directory is back converges (issue 16).
func TestUnwritableCacheDirectory(t *testing.T) {
	ns, repo, first := appsRepo(t)
	cache := filepath.Join(t.TempDir(), "cache")
	ctrl := startController(t, "--watch-namespace", ns, "--cache-dir", cache)
	ctrl.waitReady(t)
	pid := ctrl.cmd.Process.Pid
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cache, []byte("in the way\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	requestSync(t, ns, "apps")
	testenv.Eventually(t, 60*time.Second, func() error {
		st := getRepo(t, ns, "apps").Status
		if st.Phase != v1alpha1.PhaseFailed || !strings.Contains(st.Message, cache) || !strings.Contains(st.Message, "--cache-dir is a writable directory") || strings.Contains(st.Message, "\n") {
			return fmt.Errorf("phase %q message %q, want Failed naming %s in one sentence", st.Phase, st.Message, cache)
		}
		return nil
	})
	if err := os.Remove(cache); err != nil {
		t.Fatal(err)
	}
	requestSync(t, ns, "apps")
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 60*time.Second)
	if ctrl.cmd.Process.Pid != pid || ctrl.hasExited() {
		t.Fatal("the controller restarted or exited")
	}
}
