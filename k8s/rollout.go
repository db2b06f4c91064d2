package k8s

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// spec.rolloutRef hands the Deployment of a repository to a KULTA Rollout:
// its replicas, selector and template are applied to the Rollout, which
// rolls the new template out with its own strategy. See docs/kulta.md.

// rolloutManager is the field manager of handovers. It differs from the
// one of ordinary applies so that the two apply sets never replace each
// other: were the Rollout also applied from git (by another GitRepository)
// under "alumiini", a handover under that name would drop every field it
// omits.
const rolloutManager = v1alpha1.FieldManager + "-rollout"

var rolloutGVK = schema.GroupVersionKind{Group: "kulta.io", Version: "v1alpha1", Kind: "Rollout"}

// Handover is a Deployment from git whose replicas, selector and template
// went to a KULTA Rollout instead of a Deployment.
type Handover struct {
	Deployment v1alpha1.ObjectRef
	Rollout    string // namespace/name
}

func isDeployment(ref v1alpha1.ObjectRef) bool {
	return ref.Group == "apps" && ref.Kind == "Deployment"
}

// handsOver reports whether the object goes to the Rollout of spec.rolloutRef.
func (r *run) handsOver(ref v1alpha1.ObjectRef) bool {
	return r.opts.RolloutRef != "" && isDeployment(ref)
}

// rolloutInGit refuses the Rollout named by spec.rolloutRef as a manifest
// of the same repository: applying its template would undo the handover
// (and KULTA would roll that template out).
func (r *run) rolloutInGit(ref v1alpha1.ObjectRef) error {
	if r.opts.RolloutRef == "" || ref.Group != rolloutGVK.Group || ref.Kind != rolloutGVK.Kind || ref.Name != r.opts.RolloutRef {
		return nil
	}
	return errors.New("spec.rolloutRef names this Rollout, so its replicas, selector and template come from the Deployment: " +
		"remove the Rollout from this repository (create it once with kubectl, or from another repository without a template)")
}

// deploymentsIn lists the Deployments among objs, as written in git: name,
// or namespace/name when the manifest names a namespace.
func deploymentsIn(objs []*unstructured.Unstructured) []string {
	var names []string
	for _, obj := range objs {
		name := strings.TrimPrefix(obj.GetNamespace()+"/"+obj.GetName(), "/")
		if isDeployment(refOf(obj)) && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// toRollout returns what a prepared Deployment hands over: a Rollout with
// only the Deployment's replicas, selector and template. Server-side
// applying it owns exactly those fields; the strategy, labels and
// everything else stay with KULTA and whoever created the Rollout.
func (r *run) toRollout(dep *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	if len(r.deployments) > 1 {
		return nil, fmt.Errorf("spec.rolloutRef hands one Deployment to Rollout %s, but the repository has %d (%s): "+
			"keep one Deployment here and move the others to a GitRepository without rolloutRef",
			r.opts.RolloutRef, len(r.deployments), strings.Join(r.deployments, ", "))
	}
	spec := map[string]any{}
	for _, field := range []string{"replicas", "selector", "template"} {
		if v, ok, _ := unstructured.NestedFieldCopy(dep.Object, "spec", field); ok {
			spec[field] = v
		}
	}
	rollout := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	rollout.SetGroupVersionKind(rolloutGVK)
	rollout.SetNamespace(dep.GetNamespace())
	rollout.SetName(r.opts.RolloutRef)
	return rollout, nil
}

// handOver applies a Deployment's part to its Rollout and records the
// Deployment as handed over, or as failed.
func (r *run) handOver(ctx context.Context, dep v1alpha1.ObjectRef, rollout *unstructured.Unstructured, hash string) error {
	if _, _, err := r.a.applyRollout(ctx, rollout, false); err != nil {
		return r.fail(ctx, dep, nil, err)
	}
	r.res.HandedOver = append(r.res.HandedOver, Handover{Deployment: dep, Rollout: rollout.GetNamespace() + "/" + rollout.GetName()})
	r.keep(dep, hash, "") // compared with its Rollout: always dry-run
	return nil
}

// applyRollout server-side applies rollout (from toRollout) to a Rollout
// that must exist: an apply would create a Rollout without a strategy. It
// returns the live Rollout and the result of the apply, a dry run when
// dryRun.
func (a *Applier) applyRollout(ctx context.Context, rollout *unstructured.Unstructured, dryRun bool) (live, applied *unstructured.Unstructured, err error) {
	m, err := a.mapping(ctx, rolloutGVK.GroupKind(), rolloutGVK.Version)
	if meta.IsNoMatchError(err) {
		return nil, nil, errors.New("spec.rolloutRef needs KULTA, but the cluster serves no kulta.io/v1alpha1 Rollout: " +
			"install KULTA (CustomResourceDefinition rollouts.kulta.io) or remove spec.rolloutRef")
	}
	if err != nil {
		return nil, nil, err
	}
	key := rollout.GetNamespace() + "/" + rollout.GetName()
	res := a.resource(m, rollout.GetNamespace())
	live, err = res.Get(ctx, rollout.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("Rollout %s not found: create it with a strategy before ALUMIINI hands it this Deployment (spec.rolloutRef)", key)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get Rollout %s: %w", key, err)
	}
	opts := metav1.ApplyOptions{FieldManager: rolloutManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	applied, err = res.Apply(ctx, rollout.GetName(), rollout, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("apply to Rollout %s: %w", key, err)
	}
	return live, applied, nil
}
