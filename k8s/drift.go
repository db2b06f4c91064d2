package k8s

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// DriftResult is what one drift check found and did.
type DriftResult struct {
	Drifted   []v1alpha1.ObjectRef // live object differs from git
	Missing   []v1alpha1.ObjectRef // live object is gone
	Corrected []v1alpha1.ObjectRef // re-applied (mode Correct)
	Failed    []ObjectError
	// Versions are the resourceVersions of the objects found in sync or
	// corrected, for the next check (Options.Versions).
	Versions map[string]string
	DryRuns  int // objects that needed a server-side dry run
}

// Drift compares every object of objs that is in opts.Inventory with the
// cluster. The live objects are read in bulk, one list per kind and
// namespace of this repository's labels; an object still at the
// resourceVersion of opts.Versions (ALUMIINI's own last write or check)
// is in sync without more ado. For the others, a server-side dry-run
// apply shows what git would make of the live object, and any difference
// outside status and server-set metadata is drift. Fields other managers
// own and git does not set are not drift. Mode Correct re-applies what
// drifted or went missing, Detect only reports it, Ignore does nothing.
// Content hashes are not consulted. With Options.RolloutRef, the
// Deployment is compared with the Rollout it was handed to, under its own
// ref.
func (a *Applier) Drift(ctx context.Context, objs []*unstructured.Unstructured, opts Options, mode v1alpha1.DriftMode) (DriftResult, error) {
	var out DriftResult
	if mode == v1alpha1.DriftIgnore {
		return out, nil
	}
	a, err := a.as(opts)
	if err != nil {
		return out, err
	}
	r := a.newRun(opts, objs)
	out.Versions = map[string]string{}
	var fix []*unstructured.Unstructured
	for _, obj := range sortObjects(objs) {
		st, err := r.inspect(ctx, obj, true)
		if err != nil {
			return out, err
		}
		if st.skip {
			continue
		}
		if st.dryRun {
			out.DryRuns++
		}
		switch {
		case st.missing:
			out.Missing = append(out.Missing, st.ref)
		case st.err != nil:
			out.Failed = append(out.Failed, r.objectError(st))
			continue
		case sameContent(st.live, st.dry):
			if v := st.live.GetResourceVersion(); v != "" && !r.handsOver(st.ref) {
				out.Versions[ObjectKey(st.ref)] = v
			}
			continue
		default:
			out.Drifted = append(out.Drifted, st.ref)
		}
		fix = append(fix, obj)
	}
	if mode != v1alpha1.DriftCorrect || len(fix) == 0 {
		return out, nil
	}
	fr := a.newRun(opts, fix)
	err = fr.applyAll(ctx, fix, false)
	fixed := fr.result()
	out.Corrected = fixed.Applied
	for _, h := range fixed.HandedOver {
		out.Corrected = append(out.Corrected, h.Deployment)
	}
	for key, v := range fixed.Versions {
		out.Versions[key] = v
	}
	out.Failed = append(out.Failed, fr.res.Failed...)
	return out, err
}

// Diff is the dry-run outcome for one object.
type Diff struct {
	Ref    v1alpha1.ObjectRef
	Action string // create | update | unchanged | prune
	Diff   string // unified diff, live to git, Secret values redacted
	Err    error  // why the API server would refuse the object, if it would
}

// DryRun computes what Apply would do, without changing the cluster: one
// Diff per object in git, then one per object that would be pruned.
func (a *Applier) DryRun(ctx context.Context, objs []*unstructured.Unstructured, opts Options) ([]Diff, error) {
	a, err := a.as(opts)
	if err != nil {
		return nil, err
	}
	r := a.newRun(opts, objs)
	provided := providedBy(objs)
	var diffs []Diff
	for _, obj := range sortObjects(objs) {
		st, err := r.inspect(ctx, obj, false)
		if err != nil {
			return diffs, err
		}
		if st.skip {
			diffs = append(diffs, Diff{Ref: st.ref, Action: "update", Err: errDuplicate})
			continue
		}
		d := Diff{Ref: st.ref, Action: "update"}
		switch {
		case st.missing:
			d.Action, d.Diff = "create", diff(st.ref, nil, st.obj)
		case st.err == nil && sameContent(st.live, st.dry):
			d.Action = "unchanged"
		case st.err == nil:
			d.Diff = diff(st.ref, st.live, st.dry)
		}
		if st.err != nil && !waitsForSync(st, provided) {
			d.Err = r.objectError(st)
		}
		diffs = append(diffs, d)
	}
	if r.opts.SkipPrune || !r.opts.Prune {
		return diffs, nil
	}
	for _, ref := range r.pruneCandidates() {
		live, _, err := a.prunable(ctx, ref, opts.Owner)
		switch {
		case err != nil && fatal(ctx, err):
			return diffs, err
		case err != nil:
			diffs = append(diffs, Diff{Ref: ref, Action: "prune", Err: a.explain(err)})
		case live != nil:
			diffs = append(diffs, Diff{Ref: ref, Action: "prune", Diff: diff(ref, live, nil)})
		}
	}
	return diffs, nil
}

// state is one object of git compared with the cluster.
type state struct {
	ref     v1alpha1.ObjectRef
	obj     *unstructured.Unstructured // as it would be sent
	live    *unstructured.Unstructured
	dry     *unstructured.Unstructured // the dry-run apply result
	missing bool                       // not in the cluster
	err     error                      // why it cannot be checked or applied
	skip    bool                       // a duplicate, or not in the inventory when only that is wanted
	dryRun  bool                       // a server-side dry run was sent
}

// inspect reads the live object and dry-runs the apply of obj, unless it
// is a duplicate or, with onlyInventory, not in the previous inventory.
// The error is only for a failure of the whole check.
func (r *run) inspect(ctx context.Context, obj *unstructured.Unstructured, onlyInventory bool) (state, error) {
	prepared, m, err := r.prepare(ctx, obj)
	st := state{ref: refOf(prepared), obj: prepared}
	key := ObjectKey(st.ref)
	_, known := r.old[key]
	st.skip = r.seen[key] || (onlyInventory && !known)
	r.seen[key] = true
	switch {
	case st.skip:
		return st, nil
	case err == nil && r.handsOver(st.ref):
		// Compared with the Rollout: the Deployment is never created.
		st.obj, st.err = r.toRollout(prepared)
		if st.err == nil {
			st.live, st.dry, st.err = r.a.applyRollout(ctx, st.obj, true)
		}
	case err != nil:
		st.err, st.missing = err, meta.IsNoMatchError(err) // a kind not served has no objects
	default:
		st.live, st.err = r.liveObject(ctx, m, prepared)
		if apierrors.IsNotFound(st.err) {
			st.live, st.err, st.missing = nil, nil, true
		}
		switch v, ok := r.opts.Versions[key]; {
		case st.err != nil:
		case !st.missing && ok && v == st.live.GetResourceVersion():
			st.dry = st.live // nobody wrote it since ALUMIINI did (or last found it in sync)
		default:
			st.dry, st.err = r.a.ssa(ctx, m, prepared, true)
			st.dryRun = true
		}
	}
	if st.err != nil && fatal(ctx, st.err) {
		return st, st.err
	}
	return st, nil
}

// Moved reports whether any object of refs is gone or at another
// resourceVersion than versions records (ALUMIINI's own last write or
// check). With a MoveWatch that saw none of the repository's objects move
// since its last check it sends no request; otherwise it reads one
// metadata list per kind and namespace, and no manifest. An object without
// a recorded version counts as moved.
func (a *Applier) Moved(ctx context.Context, refs []v1alpha1.ObjectRef, versions map[string]string, opts Options) (bool, error) {
	a, err := a.as(opts)
	if err != nil {
		return true, err
	}
	mappings := make([]*meta.RESTMapping, len(refs))
	objs := make([]MovedObject, len(refs))
	for i, ref := range refs {
		if _, ok := versions[ObjectKey(ref)]; !ok {
			return true, nil
		}
		if mappings[i], err = a.mapping(ctx, schema.GroupKind{Group: ref.Group, Kind: ref.Kind}, ref.Version); err != nil {
			return true, err
		}
		objs[i] = MovedObject{Resource: mappings[i].Resource, Namespace: ref.Namespace, Name: ref.Name}
	}
	key := opts.Owner.key()
	if a.moves != nil && a.moves.Quiet(key, objs) {
		return false, nil
	}
	var mark Mark
	if a.moves != nil {
		mark = a.moves.Mark(objs) // before the lists: see MoveWatch
	}
	moved, err := a.movedListed(ctx, refs, mappings, versions, opts.Owner)
	if err == nil && !moved && a.moves != nil {
		a.moves.Settle(key, mark)
	}
	return moved, err
}

// movedListed compares versions with one metadata list per resource and
// namespace of the objects owner's labels mark.
func (a *Applier) movedListed(ctx context.Context, refs []v1alpha1.ObjectRef, mappings []*meta.RESTMapping, versions map[string]string, owner Owner) (bool, error) {
	listed := map[string]map[string]string{}
	for i, ref := range refs {
		m := mappings[i]
		group := m.Resource.String() + "|" + ref.Namespace
		owned, ok := listed[group]
		if !ok {
			owned = map[string]string{}
			err := a.listMetadata(ctx, m, ref.Namespace, ownerSelector(owner), func(o *metav1.PartialObjectMetadata) {
				owned[o.Name] = o.ResourceVersion
			})
			if err != nil {
				return true, err
			}
			listed[group] = owned
		}
		if v, ok := owned[ref.Name]; !ok || v != versions[ObjectKey(ref)] {
			return true, nil
		}
	}
	return false, nil
}

// liveObject reads the live object of prepared from one list per kind and
// namespace of the objects this repository's labels mark (listed once per
// run), or with a GET when it is not among them (gone, or its labels
// removed) or the list failed (a tenant's Role may grant get, not list).
func (r *run) liveObject(ctx context.Context, m *meta.RESTMapping, prepared *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	group := m.Resource.String() + "|" + prepared.GetNamespace()
	owned, ok := r.listed[group]
	if !ok {
		var err error
		if owned, err = r.a.listOwned(ctx, m, prepared.GetNamespace(), r.opts.Owner); err != nil && fatal(ctx, err) {
			return nil, err
		}
		r.listed[group] = owned // nil after an error: read one by one
	}
	if live, ok := owned[prepared.GetName()]; ok {
		return live, nil
	}
	return r.a.resource(m, prepared.GetNamespace()).Get(ctx, prepared.GetName(), metav1.GetOptions{})
}

// listOwned lists the objects of one resource and namespace that owner's
// labels mark, by name.
func (a *Applier) listOwned(ctx context.Context, m *meta.RESTMapping, namespace string, owner Owner) (map[string]*unstructured.Unstructured, error) {
	owned := map[string]*unstructured.Unstructured{}
	opts := metav1.ListOptions{LabelSelector: ownerSelector(owner), Limit: 500}
	for {
		list, err := a.resource(m, namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			owned[list.Items[i].GetName()] = &list.Items[i]
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return owned, nil
		}
	}
}

// ownerSelector selects the objects owner's labels mark.
func ownerSelector(owner Owner) string {
	return fmt.Sprintf("%s=%s,%s=%s", v1alpha1.LabelName, owner.Name, v1alpha1.LabelNamespace, owner.Namespace)
}

// listMetadata lists the metadata of the objects of one resource and
// namespace that selector selects, page by page.
func (a *Applier) listMetadata(ctx context.Context, m *meta.RESTMapping, namespace, selector string, each func(*metav1.PartialObjectMetadata)) error {
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 500}
	for {
		list, err := a.metadataOf(m, namespace).List(ctx, opts)
		if err != nil {
			return err
		}
		for i := range list.Items {
			each(&list.Items[i])
		}
		if opts.Continue = list.Continue; opts.Continue == "" {
			return nil
		}
	}
}

func (r *run) objectError(st state) ObjectError {
	err := r.a.explain(st.err)
	if isSecret(st.ref) {
		err = errors.New(scrub(err.Error(), st.obj))
	}
	return ObjectError{Ref: st.ref, Err: err}
}

// sameContent compares a live object with a dry-run result, ignoring status
// and the metadata the API server sets.
func sameContent(live, dry *unstructured.Unstructured) bool {
	return reflect.DeepEqual(normalize(live).Object, normalize(dry).Object)
}

// providedBy lists what objs provide for the others: the kinds their CRDs
// define and their Namespaces.
func providedBy(objs []*unstructured.Unstructured) map[string]bool {
	p := map[string]bool{}
	for _, obj := range objs {
		ref := refOf(obj)
		switch {
		case isNamespace(ref):
			p["namespace "+ref.Name] = true
		case isCRD(ref):
			group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
			p["kind "+kind+"."+group] = true
		}
	}
	return p
}

// waitsForSync reports whether an object could not be checked only because
// its CRD or Namespace is created by the same sync: that is no error.
func waitsForSync(st state, provided map[string]bool) bool {
	switch {
	case meta.IsNoMatchError(st.err):
		return provided["kind "+st.ref.Kind+"."+st.ref.Group]
	case apierrors.IsNotFound(st.err):
		return provided["namespace "+st.ref.Namespace]
	}
	return false
}
