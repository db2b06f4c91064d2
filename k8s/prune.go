package k8s

import (
	"context"
	"errors"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// pruneCandidates are the objects of the previous inventory that are no
// longer in git, in reverse apply order (custom resources before their
// CRDs, namespaced objects before their Namespace).
func (r *run) pruneCandidates() []v1alpha1.ObjectRef {
	var refs []v1alpha1.ObjectRef
	for key, ref := range r.old {
		if !r.seen[key] {
			refs = append(refs, ref)
		}
	}
	sortRefs(refs)
	slices.Reverse(refs)
	return refs
}

// prune deletes the objects that left git. With prune off they leave the
// inventory (and stay in the cluster); when the manifests failed to parse
// nothing is touched, as "not in git" cannot be told from "not parsed".
func (r *run) prune(ctx context.Context) error {
	if r.opts.SkipPrune {
		return nil
	}
	for _, ref := range r.pruneCandidates() {
		if !r.opts.Prune {
			delete(r.inv, ObjectKey(ref))
			continue
		}
		live, m, err := r.a.prunable(ctx, ref, r.opts.Owner)
		pruned := false
		if err == nil && live != nil {
			err = r.a.delete(ctx, m, live)
			pruned = err == nil
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				err = nil // gone already, or replaced by an object that is not ours
			}
		}
		if err != nil {
			if err := r.fail(ctx, ref, nil, err); err != nil {
				return err
			}
			continue // stays in the inventory: the next sync tries again
		}
		delete(r.inv, ObjectKey(ref))
		if pruned {
			r.res.Pruned = append(r.res.Pruned, ref)
		}
	}
	return nil
}

// prunable returns the live object and its mapping when it may be pruned,
// or a nil object when
// there is nothing to prune: it is gone (or its kind is), or it is no
// longer ours (someone removed our labels), or it is annotated
// alumiini.false.systems/prune: disabled.
func (a *Applier) prunable(ctx context.Context, ref v1alpha1.ObjectRef, owner Owner) (*unstructured.Unstructured, *meta.RESTMapping, error) {
	// Any served version will do: the one applied may no longer be served.
	m, err := a.mapping(ctx, schema.GroupKind{Group: ref.Group, Kind: ref.Kind})
	if meta.IsNoMatchError(err) {
		// A discovery that failed part way (a connection cut mid-response)
		// also looks like "no such kind": ask the API server itself before
		// an object leaves the inventory unpruned for good.
		if served, derr := a.served(ref); derr != nil || served {
			return nil, nil, fmt.Errorf("find the resource of %s (discovery is failing; retried at the next sync): %w", describe(ref), errors.Join(err, derr))
		}
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	live, err := a.resource(m, ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	labels := live.GetLabels()
	if labels[v1alpha1.LabelName] != owner.Name || labels[v1alpha1.LabelNamespace] != owner.Namespace {
		return nil, nil, nil
	}
	if live.GetAnnotations()[v1alpha1.AnnotationPrune] == v1alpha1.PruneDisabled {
		return nil, nil, nil
	}
	return live, m, nil
}

// served asks the API server, bypassing the discovery cache, whether it
// serves ref's kind in any version of its group.
func (a *Applier) served(ref v1alpha1.ObjectRef) (bool, error) {
	groups, err := a.disc.ServerGroups()
	if err != nil {
		return false, err
	}
	for _, g := range groups.Groups {
		if g.Name != ref.Group {
			continue
		}
		for _, v := range g.Versions {
			list, err := a.disc.ServerResourcesForGroupVersion(v.GroupVersion)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return false, err
			}
			for _, r := range list.APIResources {
				if r.Kind == ref.Kind {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// delete deletes live only while it is the very object that was checked
// (same UID): one recreated meanwhile is not the one in the inventory.
func (a *Applier) delete(ctx context.Context, m *meta.RESTMapping, live *unstructured.Unstructured) error {
	uid := live.GetUID()
	background := metav1.DeletePropagationBackground
	return a.resource(m, live.GetNamespace()).Delete(ctx, live.GetName(), metav1.DeleteOptions{
		Preconditions:     &metav1.Preconditions{UID: &uid},
		PropagationPolicy: &background,
	})
}
