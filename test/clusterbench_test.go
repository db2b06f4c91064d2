package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/test/gitserver"
	"github.com/false-systems/alumiini/test/testenv"
)

// BenchmarkClusterFirstSync is cluster mode's figure for `make bench`
// (issue 22): the first sync of N GitRepositories × 20 ConfigMaps
// (ALUMIINI_BENCH_CLUSTER_REPOS, default 3,000) by one member and by three
// (membership timeout ALUMIINI_BENCH_CLUSTER_TIMEOUT, default the flag's),
// timed from the last create until all are Synced, and each member's
// settled memory afterwards. Both runs use the same machine, so three
// members share its cores: the figure says what spreading costs or saves
// here, not what three nodes would do.
func BenchmarkClusterFirstSync(b *testing.B) {
	n := 3000
	if v, err := strconv.Atoi(os.Getenv("ALUMIINI_BENCH_CLUSTER_REPOS")); err == nil && v > 0 {
		n = v
	}
	git := gitserver.New(b)
	idle := git.CreateRepo(b, "idle")
	idle.CommitStrings("first", twentyConfigMaps(""))
	for i := 0; i < b.N; i++ {
		for _, members := range []int{1, 3} {
			secs, rss := clusterFirstSync(b, idle.URL(), members, n)
			b.ReportMetric(secs, fmt.Sprintf("first-sync-s@%d-members", members))
			var sum float64
			for _, r := range rss {
				sum += r
			}
			b.ReportMetric(sum/float64(len(rss))/1024, fmt.Sprintf("MiB-rss-per-member@%d-members", members))
			b.Logf("%d members, %d repositories × 20: first sync %.1f s, settled RSS per member %v KiB", members, n, secs, rss)
		}
	}
}

// clusterFirstSync starts members cluster members on a namespace of their
// own, creates n GitRepositories of url there, and returns the seconds from
// the last create until all are Synced and each member's settled RSS in
// KiB. The members are stopped before it returns.
func clusterFirstSync(b *testing.B, url string, members, n int) (float64, []float64) {
	ns := env.Namespace(b)
	cfg := scaleConfig{workers: 32, interval: "1h", reconcile: "1h"}
	addrs := memberAddrs(b, members)
	var ms []*member
	flags := []string{"--log-level", "warn", "--max-concurrent-syncs", strconv.Itoa(cfg.workers), "--profiling"}
	if d := os.Getenv("ALUMIINI_BENCH_CLUSTER_TIMEOUT"); d != "" {
		flags = append(flags, "--cluster-member-timeout", d)
	}
	for i, addr := range addrs {
		ms = append(ms, startMember(b, ns, fmt.Sprintf("m%d", i), addr, flags...))
	}
	for _, m := range ms {
		m.waitReady(b)
	}
	waitMembers(b, ns, members)
	start := createIdleRepos(b, cfg, ns, url, 0, n)
	waitAllSynced(b, ns, n)
	secs := time.Since(start).Seconds()
	var rss []float64
	for _, m := range ms {
		r, _ := settledMemory(b, m.proc, "")
		rss = append(rss, r)
	}
	for _, m := range ms {
		if err, _ := m.stop(b); err != nil {
			b.Fatalf("%s exited with %v", m.name, err)
		}
	}
	return secs, rss
}

// waitMembers waits until the cluster's member Leases in ns number want,
// so that the repositories are placed over every member from the start.
func waitMembers(b *testing.B, ns string, want int) {
	testenv.EventuallyEvery(b, time.Minute, 100*time.Millisecond, func() error {
		leases, err := env.Kube.CoordinationV1().Leases(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "alumiini.false.systems/cluster"})
		if err != nil {
			return err
		}
		if len(leases.Items) != want {
			return fmt.Errorf("%d member Leases in %s, want %d", len(leases.Items), ns, want)
		}
		return nil
	})
}
