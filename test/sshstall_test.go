package test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
)

// TestStalledSSHHostIsBoundedAndRecovers (issue 16): a git host whose SSH
// server stalls mid-handshake turns the repository Failed within about
// spec.timeout with one actionable sentence, is retried with backoff, and
// syncs on the first retry after the host answers again.
func TestStalledSSHHostIsBoundedAndRecovers(t *testing.T) {
	ns := env.Namespace(t)
	git := gitserver.New(t)
	repo := git.CreateRepo(t, "apps")
	first := repo.CommitStrings("first", map[string]string{"a.yaml": configMapYAML("a", ns, "1")})
	identity, pub := gitserver.ClientKey(t)
	sshd := git.StartSSH(t, pub)
	sshd.Stall(true)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "deploy-key", Namespace: ns},
		Data: map[string][]byte{"identity": identity, "known_hosts": []byte(sshd.KnownHosts())}}
	if _, err := env.Kube.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctrl := startController(t, "--watch-namespace", ns)
	ctrl.waitReady(t)

	const timeout = 2 * time.Second
	start := time.Now()
	createRepo(t, ns, "apps", map[string]any{"url": sshd.URL(repo), "interval": "1h", "reconcileInterval": "1h",
		"timeout": timeout.String(), "secretRef": map[string]any{"name": "deploy-key"}})
	failed := waitPhase(t, ns, "apps", v1alpha1.PhaseFailed, "", 30*time.Second)
	took := time.Since(start)
	t.Logf("Failed after %v: %s", took, failed.Status.Message)
	if took > 4*timeout {
		t.Errorf("the stalled SSH fetch failed after %v, want about spec.timeout (%v)", took, timeout)
	}
	for _, want := range []string{sshd.URL(repo), "did not complete the SSH handshake", "spec.timeout", "ssh -vT"} {
		if !strings.Contains(failed.Status.Message, want) {
			t.Errorf("status message %q does not contain %q", failed.Status.Message, want)
		}
	}

	sshd.Stall(false)
	recovering := time.Now()
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 30*time.Second)
	if v, _ := configMapValue(ns, "a"); v != "1" {
		t.Fatalf("ConfigMap a = %q after recovery, want 1", v)
	}
	stalled := sshd.Stalled()
	t.Logf("synced %v after the host answered again; %d stalled attempts", time.Since(recovering), stalled)
	// Backoff: 1 s, 2 s, 4 s... between attempts of spec.timeout each, so
	// the few seconds above allow only a handful of attempts, not a busy loop.
	if stalled < 1 || stalled > 5 {
		t.Errorf("stalled SSH connections = %d, want between 1 and 5 (a retry with backoff)", stalled)
	}
}
