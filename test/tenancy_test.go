package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// tenant makes ServiceAccount ns/name allowed to manage ConfigMaps in ns
// only.
func tenant(t *testing.T, ns, name string) {
	t.Helper()
	env.ServiceAccountWithRole(t, ns, name, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"},
		Verbs: []string{"patch", "get", "list", "create", "update", "delete"}})
}

func createSecret(t *testing.T, ns, name string, data map[string]string) {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
	if _, err := env.Kube.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestTenantsAreConfinedToTheirServiceAccount is the acceptance test of
// issue 17: GitRepository A, whose ServiceAccount may only touch team-a,
// declares objects in team-a and team-b: the first is applied, the second
// refused with a message naming it and the missing permission; A cannot
// read a Secret of team-b through secretRef or webhookSecretRef, and cannot
// prune an object of B even with B's object forged into its inventory.
func TestTenantsAreConfinedToTheirServiceAccount(t *testing.T) {
	teamA, teamB := env.Namespace(t), env.Namespace(t)
	tenant(t, teamA, "deployer")
	tenant(t, teamB, "deployer")
	createSecret(t, teamB, "b-git", map[string]string{"username": "b", "password": "b-pass"})
	createSecret(t, teamB, "b-hook", map[string]string{"token": "b-token"})
	git := gitserver.New(t)
	repoB := git.CreateRepo(t, "b")
	firstB := repoB.CommitStrings("b", map[string]string{"b.yaml": configMapYAML("b-owned", teamB, "b")})
	repoA := git.CreateRepo(t, "a")
	firstA := repoA.CommitStrings("a", map[string]string{
		"mine.yaml":     configMapYAML("a-owned", teamA, "a"),
		"intruder.yaml": configMapYAML("intruder", teamB, "a"),
	})

	ctrl := startController(t)
	ctrl.waitReady(t)
	spec := func(url string) map[string]any {
		return map[string]any{"url": url, "interval": "1h", "reconcileInterval": "1h", "prune": true, "serviceAccountName": "deployer"}
	}
	createRepo(t, teamB, "b", spec(repoB.URL()))
	waitPhase(t, teamB, "b", v1alpha1.PhaseSynced, firstB, 60*time.Second)
	createRepo(t, teamA, "a", spec(repoA.URL()))
	failed := waitPhase(t, teamA, "a", v1alpha1.PhaseFailed, firstA, 60*time.Second)
	msg := failed.Status.Message
	for _, want := range []string{"ConfigMap " + teamB + "/intruder", `resource "configmaps"`,
		`in the namespace "` + teamB + `"`, "system:serviceaccount:" + teamA + ":deployer"} {
		if !strings.Contains(msg, want) {
			t.Errorf("status message does not say %q: %s", want, msg)
		}
	}
	if v, _ := configMapValue(teamA, "a-owned"); v != "a" {
		t.Errorf("the permitted object was not applied: a-owned = %q", v)
	}
	if v, _ := configMapValue(teamB, "intruder"); v != "" {
		t.Errorf("the forbidden object was applied in %s", teamB)
	}

	// B's object forged into A's inventory while the controller is down
	// (it reads the status afresh at startup): A's prune acts as A's
	// ServiceAccount, which may not even read it.
	if err, _ := ctrl.stop(t); err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(map[string]any{"status": map[string]any{"inventory": []map[string]any{
		{"kind": "ConfigMap", "version": "v1", "namespace": teamA, "name": "a-owned"},
		{"kind": "ConfigMap", "version": "v1", "namespace": teamB, "name": "b-owned"},
	}}})
	repos := env.Dynamic.Resource(v1alpha1.GitRepositoryResource)
	if _, err := repos.Namespace(teamA).Patch(context.Background(), "a", types.MergePatchType, forged, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	second := repoA.CommitStrings("only mine", map[string]string{"intruder.yaml": ""})
	ctrl = startController(t)
	testenv.Eventually(t, 60*time.Second, func() error {
		st := getRepo(t, teamA, "a").Status
		if st.LastAttemptedCommit != second || !strings.Contains(st.Message, "ConfigMap "+teamB+"/b-owned") {
			return fmt.Errorf("attempted %s, message %q: want a refused prune of b-owned at %s", st.LastAttemptedCommit, st.Message, second)
		}
		return nil
	})
	if v, _ := configMapValue(teamB, "b-owned"); v != "b" {
		t.Fatalf("A pruned or changed B's object: b-owned = %q", v)
	}
	if v, _ := configMapValue(teamA, "a-owned"); v != "a" {
		t.Fatalf("a-owned = %q after the refused prune", v)
	}

	// Secrets are read in the GitRepository's own namespace only: a
	// namespace in the reference is not part of the API.
	createRepo(t, teamA, "steal", map[string]any{"url": repoA.URL(), "interval": "1h",
		"secretRef": map[string]any{"name": "b-git", "namespace": teamB}})
	stolen := waitPhase(t, teamA, "steal", v1alpha1.PhaseFailed, "", 60*time.Second)
	if !strings.Contains(stolen.Status.Message, teamA+"/b-git") || !strings.Contains(stolen.Status.Message, "not found") {
		t.Errorf("secretRef naming a Secret of another namespace: %q, want Secret %s/b-git not found", stolen.Status.Message, teamA)
	}
	ctrl.waitReady(t)
	createRepo(t, teamA, "hook", map[string]any{"url": repoB.URL(), "interval": "1h",
		"webhookSecretRef": map[string]any{"name": "b-hook"}})
	if code, body := pushGitHubSigned(t, ctrl.webhook, repoB.URL(), firstB, "b-token"); code == http.StatusAccepted && strings.Contains(body, teamA) {
		t.Errorf("a webhook signed with team-b's secret reached %s/hook: %d %s", teamA, code, body)
	}
}
