package k8s

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// Before an object first enters a repository's inventory, ALUMIINI checks
// that no other GitRepository manages it: two repositories that declare one
// object would take its labels in turn, and then either one's prune could
// delete what the other still declares.
//
// A run that brings several new objects (a first sync, a new directory)
// reads the claims of each resource and namespace once, as a list of the
// labelled objects' metadata, instead of reading every object:
// a first sync of 20 objects into one namespace then costs 1 list, not 20
// reads. A run with at most one new object reads that object.

// claimsBatchMin is how many more objects than its old inventory a run
// must bring before it lists claims instead of reading each object.
const claimsBatchMin = 2

// claims holds, per "resource|namespace", the owner of every object there
// that another repository's labels claim.
type claims map[string]map[string]Owner

// claimable checks that no other GitRepository manages obj.
func (r *run) claimable(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured) error {
	if !r.batchClaims {
		return r.a.claimable(ctx, m, obj, r.opts.Owner)
	}
	key := m.Resource.String() + "|" + obj.GetNamespace()
	owners, ok := r.claims[key]
	if !ok {
		var err error
		if owners, err = r.a.listClaims(ctx, m, obj.GetNamespace(), r.opts.Owner); err != nil {
			// Listing may be forbidden where reading is not (a tenant's
			// Role): read the object instead.
			return r.a.claimable(ctx, m, obj, r.opts.Owner)
		}
		r.claims[key] = owners
	}
	other, ok := owners[obj.GetName()]
	if !ok {
		return nil
	}
	return r.a.ownerGone(ctx, other)
}

// listClaims lists the objects of one resource and namespace that another
// GitRepository's labels claim: those with another name, and those with
// this name in another namespace. A label selector cannot say "another
// name or another namespace", so it lists every labelled object's metadata
// and leaves out owner's own (and those whose name label is empty, as
// claimable does). For a first sync that is one request where two
// selectors took two; a later run that adds objects beside many of its
// own pages through their metadata too (500 a page), which is rarer and
// costs a few lists.
func (a *Applier) listClaims(ctx context.Context, m *meta.RESTMapping, namespace string, owner Owner) (map[string]Owner, error) {
	owners := map[string]Owner{}
	err := a.listMetadata(ctx, m, namespace, v1alpha1.LabelName, func(o *metav1.PartialObjectMetadata) {
		if other := (Owner{Namespace: o.Labels[v1alpha1.LabelNamespace], Name: o.Labels[v1alpha1.LabelName]}); other.Name != "" && other != owner {
			owners[o.Name] = other
		}
	})
	if err != nil {
		return nil, err
	}
	return owners, nil
}

// claimable is the check for one object, by reading it.
func (a *Applier) claimable(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured, owner Owner) error {
	live, err := a.resource(m, obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	labels := live.GetLabels()
	other := Owner{Name: labels[v1alpha1.LabelName], Namespace: labels[v1alpha1.LabelNamespace]}
	if other.Name == "" || other == owner {
		return nil
	}
	return a.ownerGone(ctx, other)
}

// ownerGone lets an object claimed by another GitRepository be taken over
// only when that repository no longer exists (deleting a GitRepository
// prunes nothing, and leaves its objects free).
func (a *Applier) ownerGone(ctx context.Context, other Owner) error {
	_, err := a.ctrl.Resource(v1alpha1.GitRepositoryResource).Namespace(other.Namespace).Get(ctx, other.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("already managed by GitRepository %s/%s: declare it in one repository only, "+
		"or remove the %s labels from the live object to hand it over", other.Namespace, other.Name, v1alpha1.Group)
}
