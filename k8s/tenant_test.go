package k8s

import (
	"testing"

	"k8s.io/client-go/rest"
)

func TestTenantClientsAreCachedAndBounded(t *testing.T) {
	c := newTenantClients(&rest.Config{Host: "https://127.0.0.1:1"}, 2)
	a1, err := c.get("team-a", "deployer")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.get("team-a", "deployer"); again != a1 {
		t.Error("the client of one ServiceAccount was built twice")
	}
	for _, ns := range []string{"team-b", "team-c"} {
		if _, err := c.get(ns, "deployer"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.clients); n != 2 || c.order.Len() != 2 {
		t.Fatalf("%d clients kept, want at most 2", n)
	}
	if _, ok := c.clients[serviceAccountUser("team-a", "deployer")]; ok {
		t.Error("the least recently used client was kept")
	}
	for _, bad := range []string{"", "Deployer", "a/b", "x:y"} {
		if _, err := c.get("team-a", bad); err == nil {
			t.Errorf("ServiceAccount name %q accepted", bad)
		}
	}
}
