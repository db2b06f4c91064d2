package k8s

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// Health polls between these bounds, backing off while objects stay
// unhealthy: a Deployment rolls out in seconds, a slow one in minutes, and
// the requests per sync stay bounded by the timeout.
const (
	healthFirstPoll = 200 * time.Millisecond
	healthMaxPoll   = 5 * time.Second
)

// Unhealthy is one applied object that was not Current (kstatus) when the
// wait ended.
type Unhealthy struct {
	Ref     v1alpha1.ObjectRef
	Status  string // kstatus status: InProgress, Failed, Terminating, NotFound, Unknown
	Message string // kstatus's explanation, or the read error
}

func (u Unhealthy) String() string {
	msg := strings.TrimSuffix(u.Message, ".")
	if msg == "" {
		return describe(u.Ref) + " is " + u.Status
	}
	return describe(u.Ref) + " is " + u.Status + ": " + msg
}

// HealthMessage lists unhealthy objects for a status message: the first
// few in full and how many more.
func HealthMessage(unhealthy []Unhealthy) string {
	const max = 3
	parts := make([]string, 0, max)
	for i, u := range unhealthy {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(unhealthy)-max))
			break
		}
		parts = append(parts, u.String())
	}
	return strings.Join(parts, "; ")
}

// WaitHealthy waits until the applied objects are all Current per kstatus,
// or until ctx ends, and returns those that are not (nil when all are).
// Objects are read as the ServiceAccount of opts, like Apply writes them,
// and mapped through the Applier's REST mapper. waiting, when not nil,
// hears once what the first look found unhealthy, so the caller can say
// what it waits for.
func (a *Applier) WaitHealthy(ctx context.Context, refs []v1alpha1.ObjectRef, opts Options, waiting func([]Unhealthy)) ([]Unhealthy, error) {
	as, err := a.as(opts)
	if err != nil {
		return nil, fmt.Errorf("health check: %w", err)
	}
	return WaitHealthy(ctx, as.client, a.mapper, refs, waiting), nil
}

// WaitHealthy is Applier.WaitHealthy for any client and mapper. An object
// once Current is not read again; the others are read on a backing-off
// schedule until they are or ctx ends.
func WaitHealthy(ctx context.Context, client dynamic.Interface, mapper meta.RESTMapper, refs []v1alpha1.ObjectRef, waiting func([]Unhealthy)) []Unhealthy {
	pending := append([]v1alpha1.ObjectRef(nil), refs...)
	last := map[string]Unhealthy{} // what the previous round saw, kept when ctx cuts a read short
	delay := healthFirstPoll
	for {
		var left []Unhealthy
		for _, ref := range pending {
			u := health(ctx, client, mapper, ref)
			if u == nil {
				continue
			}
			if prev, ok := last[ObjectKey(ref)]; ok && ctx.Err() != nil {
				u = &prev
			}
			last[ObjectKey(ref)] = *u
			left = append(left, *u)
		}
		if len(left) == 0 {
			return nil
		}
		if waiting != nil {
			waiting(left)
			waiting = nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return left
		case <-timer.C:
		}
		delay = min(delay*3/2, healthMaxPoll)
		pending = pending[:0]
		for _, u := range left {
			pending = append(pending, u.Ref)
		}
	}
}

// health reads one object and returns nil when it is Current.
func health(ctx context.Context, client dynamic.Interface, mapper meta.RESTMapper, ref v1alpha1.ObjectRef) *Unhealthy {
	unknown := func(err error) *Unhealthy {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return &Unhealthy{Ref: ref, Status: string(status.UnknownStatus), Message: "not read before the timeout"}
		}
		return &Unhealthy{Ref: ref, Status: string(status.UnknownStatus), Message: err.Error()}
	}
	m, err := mapper.RESTMapping(schema.GroupKind{Group: ref.Group, Kind: ref.Kind}, versions(ref)...)
	if err != nil {
		return unknown(err)
	}
	var res dynamic.ResourceInterface = client.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		res = client.Resource(m.Resource).Namespace(ref.Namespace)
	}
	live, err := res.Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &Unhealthy{Ref: ref, Status: string(status.NotFoundStatus), Message: "not found in the cluster"}
	}
	if err != nil {
		return unknown(err)
	}
	r, err := status.Compute(live)
	if err != nil {
		return unknown(err)
	}
	if r.Status == status.CurrentStatus {
		return nil
	}
	return &Unhealthy{Ref: ref, Status: string(r.Status), Message: r.Message}
}

func versions(ref v1alpha1.ObjectRef) []string {
	if ref.Version == "" {
		return nil
	}
	return []string{ref.Version}
}
