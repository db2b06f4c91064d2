package k8s

import (
	"testing"
	"time"
)

// Cached says whether Data would answer without the API server: only for a
// Secret read less than the TTL ago and not forgotten since.
func TestSecretsCached(t *testing.T) {
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	s := NewSecrets(nil, 10*time.Minute)
	s.now = func() time.Time { return now }
	s.entries["ns/fresh"] = secretEntry{fetched: now.Add(-9 * time.Minute)}
	s.entries["ns/old"] = secretEntry{fetched: now.Add(-10 * time.Minute)}
	s.entries["ns/forgotten"] = secretEntry{fetched: now}
	s.Forget("ns", "forgotten")
	tests := []struct {
		name string
		want bool
	}{{"fresh", true}, {"old", false}, {"forgotten", false}, {"never read", false}}
	for _, tt := range tests {
		if got := s.Cached("ns", tt.name); got != tt.want {
			t.Errorf("Cached(ns/%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
