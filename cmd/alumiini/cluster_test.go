package main

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestStartNodeNeedsAnAddressOthersCanDial: listening on every interface
// without POD_IP (or on port 0) gives the other members nothing to dial.
func TestStartNodeNeedsAnAddressOthersCanDial(t *testing.T) {
	for _, tc := range []struct{ addr, podIP string }{{":4020", ""}, {"0.0.0.0:4020", ""}, {":0", "10.0.0.7"}} {
		ctrl := &controller{cfg: config{Cluster: true, ClusterAddr: tc.addr}, log: zap.NewNop(),
			getenv: func(k string) string { return map[string]string{"POD_IP": tc.podIP}[k] }}
		_, err := ctrl.startNode()
		if err == nil || !strings.Contains(err.Error(), "set POD_IP") {
			t.Errorf("--cluster-addr %q with POD_IP %q: err = %v, want one asking for POD_IP and a fixed port", tc.addr, tc.podIP, err)
		}
	}
}
