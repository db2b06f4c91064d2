package test

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// blackhole is a git host that accepts connections and never answers.
func blackhole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// TestBlackholedGitHostHoldsNoSlot: fifty repositories whose git host
// never answers (each waits out its spec.timeout of 2 minutes) must not
// hold the --max-concurrent-syncs slots: a healthy repository created
// after them syncs, and its webhook push is applied, long before any of
// those fetches times out.
func TestBlackholedGitHostHoldsNoSlot(t *testing.T) {
	ns, repo, first := appsRepo(t)
	hole := blackhole(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns, "--max-concurrent-syncs", "4",
		"--shutdown-timeout", "3s") // the hung fetches would hold a graceful stop for 30s
	ctrl.waitReady(t)
	for i := range 50 {
		createRepo(t, ns, fmt.Sprintf("stuck-%02d", i), map[string]any{"url": fmt.Sprintf("%s/stuck-%02d.git", hole, i),
			"timeout": "2m", "interval": "1h"})
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := ctrl.metricValue(t, "alumiini_repository_actors"); n < 50 {
			return fmt.Errorf("%v repository actors", n)
		}
		return nil
	})

	start := time.Now()
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 30*time.Second)
	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	if code, body := pushGitHub(t, ctrl.webhook, repo.URL(), second); code != http.StatusAccepted {
		t.Fatalf("webhook reply %d %s", code, body)
	}
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, second, 30*time.Second)
	t.Logf("first sync and a pushed commit applied %v after the 50 blackholed repositories", time.Since(start).Round(time.Millisecond))
	if r := getRepo(t, ns, "stuck-00"); r.Status.Phase == v1alpha1.PhaseFailed {
		t.Fatalf("stuck-00 already failed (%q): the test did not hold the fetches open", r.Status.Message)
	}
}
