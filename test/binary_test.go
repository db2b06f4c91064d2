package test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

const webhookSecret = "e2e-webhook-secret"

func secretFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "webhook-secret")
	if err := os.WriteFile(path, []byte(webhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pushGitHub sends a GitHub push webhook for commit on main, signed with
// the controller-wide secret.
func pushGitHub(t testing.TB, addr, repoURL, commit string) (int, string) {
	t.Helper()
	return pushGitHubSigned(t, addr, repoURL, commit, webhookSecret)
}

// pushGitHubSigned sends a GitHub push webhook signed with secret.
func pushGitHubSigned(t testing.TB, addr, repoURL, commit, secret string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "after": commit,
		"head_commit": map[string]any{"id": commit},
		"repository":  map[string]any{"clone_url": repoURL, "html_url": strings.TrimSuffix(repoURL, ".git")},
	})
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/webhook/github", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("send webhook: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBinaryServesAndStopsCleanly runs the built binary: it syncs, serves
// health, readiness, metrics and webhooks, and exits cleanly on SIGTERM.
func TestBinaryServesAndStopsCleanly(t *testing.T) {
	out, err := exec.Command(controllerBinary(t), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "alumiini ") {
		t.Fatalf("--version: %q, %v", out, err)
	}
	out, err = exec.Command(controllerBinary(t), "--webhook-addr", "nonsense").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--webhook-addr") {
		t.Fatalf("a bad flag value should fail naming the flag: %q, %v", out, err)
	}

	ns, repo, first := appsRepo(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	if code, body, err := httpGet("http://" + ctrl.health + "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz = %d %q %v", code, body, err)
	}
	// The sync is counted just after its status is written, so poll.
	testenv.Eventually(t, 10*time.Second, func() error {
		code, body, err := httpGet("http://" + ctrl.metrics + "/metrics")
		if err != nil || code != 200 {
			return fmt.Errorf("/metrics = %d, %v", code, err)
		}
		for _, name := range []string{"alumiini_syncs_total", "go_gc_heap_live_bytes"} { // the latter: the benchmarks' live heap
			if !strings.Contains(body, "\n"+name) {
				return fmt.Errorf("/metrics lacks %s", name)
			}
		}
		return nil
	})
	if code, body := pushGitHub(t, ctrl.webhook, "https://nowhere.example/none.git", first); code != http.StatusNotFound {
		t.Fatalf("push for an unknown repository = %d %s, want 404", code, body)
	}

	err, took := ctrl.stop(t)
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, ctrl.Logs())
	}
	if took > 25*time.Second {
		t.Fatalf("took %v to stop", took)
	}
	if !strings.Contains(ctrl.Logs(), "stopped cleanly") {
		t.Fatalf("no clean shutdown in the logs:\n%s", ctrl.Logs())
	}
}

// TestWebhookSyncsWithoutWaitingForThePoll: a push plus a signed webhook
// updates the cluster while the poll interval is an hour (issue 6).
func TestWebhookSyncsWithoutWaitingForThePoll(t *testing.T) {
	ns, repo, first := appsRepo(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	code, body := pushGitHub(t, ctrl.webhook, repo.URL(), second)
	if code != http.StatusAccepted || !strings.Contains(body, ns+"/apps") {
		t.Fatalf("webhook reply %d %s, want 202 naming %s/apps", code, body, ns)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if v, _ := configMapValue(ns, "a"); v != "2" {
			return fmt.Errorf("ConfigMap a = %q, want 2", v)
		}
		return nil
	})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 10*time.Second)
	// The metric is recorded just after the status is written.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := ctrl.metricValue(t, "alumiini_syncs_total", `trigger="webhook"`, `result="success"`); n != 1 {
			return fmt.Errorf("webhook-triggered successful syncs = %v, want 1", n)
		}
		return nil
	})

	// A webhook naming a commit the server does not show yet: the fetch is
	// retried a few times (one ref listing each), then the sync goes on
	// with what the server has and changes nothing.
	adverts := repo.Server().RefAdvertisements()
	unseen := strings.Repeat("ab", 20)
	if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), unseen); code != http.StatusAccepted {
		t.Fatalf("webhook reply %d %s", code, body)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := ctrl.metricValue(t, "alumiini_syncs_total", `trigger="webhook"`, `result="unchanged"`); n != 1 {
			return fmt.Errorf("unchanged webhook syncs = %v, want 1", n)
		}
		return nil
	})
	if n := repo.Server().RefAdvertisements() - adverts; n != 4 {
		t.Fatalf("ref listings for an unseen webhook commit = %d, want 4 (one fetch and three retries)", n)
	}
	if got := getRepo(t, ns, "apps").Status; got.Phase != v1alpha1.PhaseSynced || got.LastSyncedCommit != second {
		t.Fatalf("status after an unseen commit: %s at %s", got.Phase, got.LastSyncedCommit)
	}
}

// TestLeaderElection: of two replicas one syncs; a webhook sent to the
// standby reaches a sync; when the leader dies the standby takes over.
func TestLeaderElection(t *testing.T) {
	ns, repo, first := appsRepo(t)
	flags := []string{"--leader-elect", "--lease-namespace", ns, "--watch-namespace", ns, "--webhook-secret-file", secretFile(t),
		"--leader-elect-lease-duration", "8s", "--leader-elect-renew-deadline", "6s", "--leader-elect-retry-period", "1s"}
	a := startController(t, flags...)
	b := startController(t, flags...)
	a.waitReady(t)
	b.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	var leader, standby *proc
	testenv.Eventually(t, 30*time.Second, func() error {
		na, nb := a.metricValue(t, "alumiini_repository_actors"), b.metricValue(t, "alumiini_repository_actors")
		switch {
		case na == 1 && nb == 0:
			leader, standby = a, b
		case na == 0 && nb == 1:
			leader, standby = b, a
		default:
			return fmt.Errorf("repository actors: a=%v b=%v, want exactly one replica syncing", na, nb)
		}
		return nil
	})

	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	if code, body := pushGitHub(t, standby.webhook, repo.URL(), second); code != http.StatusAccepted {
		t.Fatalf("webhook to the standby: %d %s", code, body)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 30*time.Second)
	if n := standby.metricValue(t, "alumiini_syncs_total"); n != 0 {
		t.Fatalf("the standby synced %v times", n)
	}

	// Pushed before the kill, with an hour-long poll interval: only the new
	// leader's startup sync picks it up.
	third := repo.CommitStrings("third", map[string]string{"a.yaml": configMapYAML("a", ns, "3")})
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, third, 60*time.Second)
	if n := standby.metricValue(t, "alumiini_repository_actors"); n != 1 {
		t.Fatalf("after the leader died, the standby runs %v actors, want 1", n)
	}
}

// TestWebhookSecretRefOverridesTheControllerSecret: a repository with its
// own webhook Secret accepts pushes signed with it, and refuses pushes
// signed with the controller-wide secret.
func TestWebhookSecretRefOverridesTheControllerSecret(t *testing.T) {
	ns := env.Namespace(t)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns}, Data: map[string][]byte{"token": []byte("per-repo")}}
	if _, err := env.Kube.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	git := gitserver.New(t)
	repo := git.CreateRepo(t, "apps")
	first := repo.CommitStrings("first", map[string]string{"a.yaml": configMapYAML("a", ns, "1")})
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h",
		"webhookSecretRef": map[string]any{"name": "hook"}})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), second); code != http.StatusUnauthorized {
		t.Fatalf("push signed with the controller secret = %d %s, want 401", code, body)
	}
	if code, body := pushGitHubSigned(t, ctrl.webhook, repo.URL(), second, "per-repo"); code != http.StatusAccepted {
		t.Fatalf("push signed with the repository's secret = %d %s, want 202", code, body)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 20*time.Second)
}

// TestGitCredentialsFromSecretRef: a repository behind basic auth fails
// with an actionable message until spec.secretRef names its credentials.
func TestGitCredentialsFromSecretRef(t *testing.T) {
	ns, repo, first := appsRepo(t, gitserver.WithBasicAuth("deploy", "s3cret-pass"))
	ctrl := startController(t, "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	failed := waitPhase(t, ns, "apps", v1alpha1.PhaseFailed, "", 60*time.Second)
	if !strings.Contains(failed.Status.Message, "spec.secretRef") {
		t.Fatalf("message does not say how to fix it: %q", failed.Status.Message)
	}

	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns},
		Data: map[string][]byte{"username": []byte("deploy"), "password": []byte("s3cret-pass")}}
	if _, err := env.Kube.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"spec":{"secretRef":{"name":"git"}}}`)
	if _, err := env.Dynamic.Resource(v1alpha1.GitRepositoryResource).Namespace(ns).Patch(context.Background(), "apps",
		"application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)
	if strings.Contains(ctrl.Logs(), "s3cret-pass") {
		t.Fatal("the git password appears in the controller's logs")
	}
}

// TestLeaderReleasesTheLeaseOnSIGTERM: a leader stopped cleanly releases
// the Lease after its actors stopped, so the standby takes over long before
// the Lease would expire, and syncs.
func TestLeaderReleasesTheLeaseOnSIGTERM(t *testing.T) {
	ns, repo, first := appsRepo(t)
	// A Lease that would take a minute to expire: only a release explains a
	// quick takeover.
	flags := []string{"--leader-elect", "--lease-namespace", ns, "--watch-namespace", ns,
		"--leader-elect-lease-duration", "60s", "--leader-elect-renew-deadline", "40s", "--leader-elect-retry-period", "500ms"}
	a := startController(t, flags...)
	a.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)
	b := startController(t, flags...)
	b.waitReady(t)
	if n := b.metricValue(t, "alumiini_repository_actors"); n != 0 {
		t.Fatalf("the second replica runs %v actors while the first leads", n)
	}

	// Pushed while the first leads with an hour-long poll interval: only the
	// new leader's startup sync picks it up.
	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	if err, _ := a.stop(t); err != nil {
		t.Fatalf("leader exit: %v", err)
	}
	if !strings.Contains(a.Logs(), "released the Lease") {
		t.Fatalf("the leader did not release the Lease:\n%s", a.Logs())
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := b.metricValue(t, "alumiini_repository_actors"); n != 1 {
			return fmt.Errorf("standby runs %v actors", n)
		}
		return nil
	})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 30*time.Second)
}
