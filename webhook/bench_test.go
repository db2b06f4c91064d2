package webhook

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// BenchmarkGitHubPush measures one verified GitHub push through the handler
// over loopback HTTP, with one repository and with 10,000 idle ones beside
// it, and reports the p99 latency against the 10 ms target (design.md §6).
func BenchmarkGitHubPush(b *testing.B) {
	for _, idle := range []int{0, 10_000} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) {
			repos := []*v1alpha1.GitRepository{gitRepo("apps", "config", ghURL)}
			for i := range idle {
				repos = append(repos, gitRepo("tenant", fmt.Sprint("repo-", i),
					fmt.Sprintf("https://github.com/tenant-%d/config.git", i)))
			}
			srv, _ := start(b, Config{Secret: []byte(globalSecret)}, nil, repos...)
			req := github(b, "push", "github-push.json", globalSecret)
			client := srv.Client()
			var latencies []time.Duration
			for b.Loop() {
				began := time.Now()
				r, err := http.NewRequest(http.MethodPost, srv.URL+req.path, bytes.NewReader(req.body))
				if err != nil {
					b.Fatal(err)
				}
				r.Header = req.header
				resp, err := client.Do(r)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					b.Fatalf("status %d, want 202", resp.StatusCode)
				}
				latencies = append(latencies, time.Since(began))
			}
			slices.Sort(latencies)
			p99 := latencies[len(latencies)*99/100]
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		})
	}
}
