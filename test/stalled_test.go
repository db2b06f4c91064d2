package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// TestStalledRepositoryMakesNoGitRequests: manifests that do not parse at
// a commit stop the retry schedule. Over several backoff periods (1 s, 2 s,
// 4 s by default) the git server sees no ref listing; a manual request
// syncs again (issue 15).
func TestStalledRepositoryMakesNoGitRequests(t *testing.T) {
	ns := env.Namespace(t)
	git := gitserver.New(t)
	repo := git.CreateRepo(t, "apps")
	commit := repo.CommitStrings("broken", map[string]string{
		"deploy/a.yaml":      configMapYAML("a", ns, "1"),
		"deploy/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x: y\n",
	})
	ctrl := startController(t, "--watch-namespace", ns)
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "path": "deploy", "interval": "1h", "reconcileInterval": "1h"})

	failed := waitPhase(t, ns, "apps", v1alpha1.PhaseFailed, commit, 60*time.Second)
	if !meta.IsStatusConditionTrue(failed.Status.Conditions, v1alpha1.ConditionStalled) {
		t.Fatalf("conditions %+v, want Stalled=True", failed.Status.Conditions)
	}
	const want = "deploy/broken.yaml:4:3: mapping values are not allowed"
	if !strings.Contains(failed.Status.Message, want) {
		t.Fatalf("message %q does not name %q", failed.Status.Message, want)
	}
	listings := git.RefAdvertisements()
	testenv.Consistently(t, 8*time.Second, 200*time.Millisecond, func() error {
		if n := git.RefAdvertisements(); n != listings {
			return fmt.Errorf("a stalled repository listed refs %d more time(s)", n-listings)
		}
		return nil
	})

	requestSync(t, ns, "apps")
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := git.RefAdvertisements(); n == listings {
			return fmt.Errorf("no ref listing after a manual request")
		}
		return nil
	})
}
