package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(config) bool
		wantErr string
	}{
		{name: "defaults", check: func(c config) bool {
			return c.WebhookAddr == ":8080" && c.MetricsAddr == ":9090" && c.HealthAddr == ":8081" &&
				c.LogLevel == "info" && c.LogFormat == "console" && !c.LeaderElect && c.LeaseNamespace == "alumiini-system"
		}},
		{name: "in-cluster logs json", env: map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAMESPACE": "ops"},
			check: func(c config) bool { return c.LogFormat == "json" && c.LeaseNamespace == "ops" }},
		{name: "env twin", env: map[string]string{"ALUMIINI_LEADER_ELECT": "true", "ALUMIINI_CACHE_DIR": "/var/cache/x"},
			check: func(c config) bool { return c.LeaderElect && c.CacheDir == "/var/cache/x" }},
		{name: "flag beats env", args: []string{"--watch-namespace", "team-a"}, env: map[string]string{"ALUMIINI_WATCH_NAMESPACE": "team-b"},
			check: func(c config) bool { return c.WatchNamespace == "team-a" }},
		{name: "bad bool in env", env: map[string]string{"ALUMIINI_LEADER_ELECT": "sure"}, wantErr: "ALUMIINI_LEADER_ELECT"},
		{name: "bad address", args: []string{"--webhook-addr", "8080"}, wantErr: "--webhook-addr"},
		{name: "bad level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "bad format", args: []string{"--log-format", "xml"}, wantErr: "--log-format"},
		{name: "bad sink", args: []string{"--cdevents-sink", "ftp://x"}, wantErr: "--cdevents-sink"},
		{name: "default service account from env", env: map[string]string{"ALUMIINI_DEFAULT_SERVICE_ACCOUNT": "deployer"},
			check: func(c config) bool { return c.DefaultSA == "deployer" }},
		{name: "bad service account", args: []string{"--default-service-account", "Not_A_Name"}, wantErr: "--default-service-account"},
		{name: "cluster mode", args: []string{"--cluster", "--cluster-addr", "127.0.0.1:4020"}, check: func(c config) bool {
			return c.Cluster && c.ClusterName == "alumiini" && c.ClusterAddr == "127.0.0.1:4020" && c.ClusterTimeout.String() == "15s"
		}},
		{name: "cluster excludes leader election", args: []string{"--cluster", "--leader-elect"}, wantErr: "exclude each other"},
		{name: "bad cluster address", args: []string{"--cluster", "--cluster-addr", "4020"}, wantErr: "--cluster-addr"},
		{name: "cluster timeout too short", args: []string{"--cluster", "--cluster-member-timeout", "100ms"}, wantErr: "--cluster-member-timeout"},
		{name: "stray argument", args: []string{"run"}, wantErr: "unexpected argument"},
		{name: "unknown flag", args: []string{"--frobnicate"}, wantErr: "frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("unexpected config %+v", c)
			}
		})
	}
}
