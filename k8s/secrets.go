package k8s

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Secrets reads Secrets for git credentials and webhook tokens, keeping each
// for a while so that a quiet poll of a repository with credentials makes no
// API request. Forget drops one after a failure, so a rotated Secret is read
// again at once.
type Secrets struct {
	client kubernetes.Interface
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]secretEntry
}

type secretEntry struct {
	data    map[string][]byte
	fetched time.Time
}

// NewSecrets returns a reader that keeps Secrets for ttl.
func NewSecrets(client kubernetes.Interface, ttl time.Duration) *Secrets {
	return &Secrets{client: client, ttl: ttl, now: time.Now, entries: map[string]secretEntry{}}
}

// Data returns the data of Secret namespace/name.
func (s *Secrets) Data(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	key := namespace + "/" + name
	if e, ok := s.fresh(key); ok {
		return e.data, nil
	}
	sec, err := s.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s: %w", key, err)
	}
	now := s.now()
	s.mu.Lock()
	// Drop expired copies on the way, so Secrets of deleted repositories do
	// not stay in memory.
	for k, e := range s.entries {
		if now.Sub(e.fetched) >= s.ttl {
			delete(s.entries, k)
		}
	}
	s.entries[key] = secretEntry{data: sec.Data, fetched: now}
	s.mu.Unlock()
	return sec.Data, nil
}

// SecretValue returns one key of a Secret; a missing or empty key is an
// error naming the Secret and the key.
func (s *Secrets) SecretValue(ctx context.Context, namespace, name, key string) ([]byte, error) {
	data, err := s.Data(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	v := data[key]
	if len(v) == 0 {
		return nil, fmt.Errorf("Secret %s/%s has no key %q: add it", namespace, name, key)
	}
	return v, nil
}

// Cached reports whether Data would answer from memory, without an API
// request: the Secret was read less than the TTL ago.
func (s *Secrets) Cached(namespace, name string) bool {
	_, ok := s.fresh(namespace + "/" + name)
	return ok
}

// fresh returns the copy of Secret key if it was read less than the TTL ago.
func (s *Secrets) fresh(key string) (secretEntry, bool) {
	s.mu.Lock()
	e, ok := s.entries[key]
	s.mu.Unlock()
	return e, ok && s.now().Sub(e.fetched) < s.ttl
}

// Forget drops the cached copy of a Secret.
func (s *Secrets) Forget(namespace, name string) {
	s.mu.Lock()
	delete(s.entries, namespace+"/"+name)
	s.mu.Unlock()
}
