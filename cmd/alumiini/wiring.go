package main

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/false-systems/alumiini/actors/metrics"
	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/webhook"
)

// switchSink sends webhooks to the actor system while this replica leads,
// and hands them to the leader (through the requestedAt annotation) while
// it stands by.
type switchSink struct {
	mu     sync.RWMutex
	target webhook.Sink
}

func (s *switchSink) set(t webhook.Sink) {
	s.mu.Lock()
	s.target = t
	s.mu.Unlock()
}

func (s *switchSink) Webhook(key types.NamespacedName, commit string) error {
	s.mu.RLock()
	t := s.target
	s.mu.RUnlock()
	return t.Webhook(key, commit)
}

// metricsHooks feeds actor-tree events into the metrics.
type metricsHooks struct {
	m    *metrics.Metrics
	view *actorView
}

func (h metricsHooks) ActorStarted(string) { h.m.ActorStarted() }
func (h metricsHooks) ActorRestarted(key string) {
	h.m.ActorRestarted()
	h.view.restarted(key)
}
func (h metricsHooks) ActorStopped(string) { h.m.ActorStopped() }

// eventRecorder emits Kubernetes Events on GitRepositories.
type eventRecorder struct{ rec record.EventRecorder }

func (r eventRecorder) Event(repo *v1alpha1.GitRepository, eventType, reason, message string) {
	ref := &corev1.ObjectReference{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: "GitRepository",
		Namespace: repo.Namespace, Name: repo.Name, UID: repo.UID, ResourceVersion: repo.ResourceVersion,
	}
	r.rec.Event(ref, eventType, reason, message)
}

func newRecorder(kube kubernetes.Interface) (eventRecorder, func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	s := runtime.NewScheme()
	_ = scheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	rec := b.NewRecorder(s, corev1.EventSource{Component: "alumiini"})
	return eventRecorder{rec: rec}, b.Shutdown
}
