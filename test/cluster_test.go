package test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestClusterMode runs three controllers with --cluster: every GitRepository
// gets exactly one actor across them and is synced once; a webhook sent to
// a member that does not own the repository is applied; when a member is
// killed, the others take its repositories over and apply a new commit.
func TestClusterMode(t *testing.T) {
	const n = 30
	ns := env.Namespace(t)
	repo := gitserver.New(t).CreateRepo(t, "apps")
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("r%d/cm.yaml", i)] = configMapYAML(fmt.Sprintf("cm-%d", i), ns, "1")
	}
	first := repo.CommitStrings("first", files)
	flags := []string{"--cluster", "--cluster-addr", "127.0.0.1:0", "--cluster-member-timeout", "4s",
		"--lease-namespace", ns, "--watch-namespace", ns, "--webhook-secret-file", secretFile(t)}
	var procs []*proc
	for i := range 3 {
		p := startControllerEnv(t, []string{fmt.Sprintf("POD_NAME=member-%d", i)}, flags...)
		procs = append(procs, p)
	}
	for _, p := range procs {
		p.waitReady(t)
	}
	for i := range n {
		createRepo(t, ns, fmt.Sprintf("r%d", i), map[string]any{"url": repo.URL(), "path": fmt.Sprintf("r%d", i), "interval": "1h", "reconcileInterval": "1h"})
	}
	for i := range n {
		waitPhase(t, ns, fmt.Sprintf("r%d", i), v1alpha1.PhaseSynced, first, 60*time.Second)
	}
	actors := make([]float64, len(procs))
	testenv.Eventually(t, 30*time.Second, func() error {
		var sumActors, sumSyncs float64
		for i, p := range procs {
			actors[i] = p.metricValue(t, "alumiini_repository_actors")
			sumActors += actors[i]
			sumSyncs += p.metricValue(t, "alumiini_syncs_total", `trigger="startup"`)
		}
		if sumActors != n || sumSyncs != n {
			return fmt.Errorf("actors per member %v (sum %v), syncs %v: want %d actors in all and each repository synced once", actors, sumActors, sumSyncs, n)
		}
		return nil
	})
	for i, a := range actors {
		if a == 0 {
			t.Fatalf("member %d runs no repository actors (%v)", i, actors)
		}
	}
	t.Logf("repository actors per member: %v", actors)

	// A push for every repository, sent to member 0, whether it owns it or not.
	second := repo.CommitStrings("second", map[string]string{"r0/cm.yaml": configMapYAML("cm-0", ns, "2")})
	if code, body := pushGitHub(t, procs[0].webhook, repo.URL(), second); code != http.StatusAccepted {
		t.Fatalf("webhook to member 0: %d %s", code, body)
	}
	for i := range n {
		waitPhase(t, ns, fmt.Sprintf("r%d", i), v1alpha1.PhaseSynced, second, 30*time.Second)
	}

	// Kill member 2; the others own everything and apply the next push.
	if err := procs[2].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	third := repo.CommitStrings("third", map[string]string{"r1/cm.yaml": configMapYAML("cm-1", ns, "3")})
	testenv.Eventually(t, 2*4*time.Second+5*time.Second, func() error {
		if got := procs[0].metricValue(t, "alumiini_repository_actors") + procs[1].metricValue(t, "alumiini_repository_actors"); got != n {
			return fmt.Errorf("the two survivors run %v repository actors, want %d", got, n)
		}
		return nil
	})
	t.Logf("survivors own all repositories %s after the kill", time.Since(killed))
	if code, body := pushGitHub(t, procs[1].webhook, repo.URL(), third); code != http.StatusAccepted {
		t.Fatalf("webhook to member 1: %d %s", code, body)
	}
	for i := range n {
		waitPhase(t, ns, fmt.Sprintf("r%d", i), v1alpha1.PhaseSynced, third, 30*time.Second)
	}
	if v, _ := configMapValue(ns, "cm-1"); v != "3" {
		t.Fatalf("cm-1 = %q after the third push, want 3", v)
	}
}
