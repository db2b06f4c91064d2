package test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
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
	report := apiLoad(b, fmt.Sprintf("%d member(s)", members))
	reported := false
	defer func() { // also when waitAllSynced fails
		if !reported {
			report()
		}
	}()
	start := createIdleRepos(b, cfg, ns, url, 0, n)
	procs := make([]*proc, len(ms))
	for i, m := range ms {
		procs[i] = m.proc
	}
	waitAllSynced(b, ns, n, procs...)
	secs := time.Since(start).Seconds()
	report()
	reported = true
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

// apiLoad logs what the API server served from now until the returned
// func runs: the calls it served most, with their mean time and how many
// it refused as too many (429, which client-go retries), every Lease
// call, and the mean queueing of each priority level: what to compare
// when the members' Lease renewals fail.
func apiLoad(b *testing.B, what string) func() {
	before, start := apiMetrics(b), time.Now()
	return func() {
		after := apiMetrics(b)
		took := time.Since(start).Seconds()
		count := diffCalls(apiCalls(before, "apiserver_request_total"), apiCalls(after, "apiserver_request_total"))
		sum := diffCalls(apiCalls(before, "apiserver_request_duration_seconds_sum"), apiCalls(after, "apiserver_request_duration_seconds_sum"))
		const tooMany = `code="429"`
		rejected := diffCalls(apiCalls(before, "apiserver_request_total", tooMany), apiCalls(after, "apiserver_request_total", tooMany))
		calls := make([]apiCall, 0, len(count))
		for c := range count {
			calls = append(calls, c)
		}
		sort.Slice(calls, func(i, j int) bool { return count[calls[i]] > count[calls[j]] })
		var lines []string
		for i, c := range calls {
			if i < 12 || c.resource == "leases" {
				lines = append(lines, fmt.Sprintf("%-40s %8.0f  %6.1f/s  mean %7.1f ms  %6.0f refused (429)",
					c, count[c], count[c]/took, 1000*sum[c]/count[c], rejected[c]))
			}
		}
		waits := diffLevels(before, after)
		b.Logf("API server load over %.0f s, %s:\n%s\nmean APF queueing by priority level: %s", took, what, strings.Join(lines, "\n"), waits)
	}
}

// diffCalls is after minus before, dropping calls that did not change.
func diffCalls(before, after map[apiCall]float64) map[apiCall]float64 {
	out := map[apiCall]float64{}
	for c, v := range after {
		if d := v - before[c]; d > 0 {
			out[c] = d
		}
	}
	return out
}

// diffLevels is the mean APF queueing wait of each priority level that
// queued a request between two scrapes.
func diffLevels(before, after string) string {
	level := func(raw, metric string) map[string]float64 {
		return sumBy(raw, metric, func(line string) (string, bool) { return labelValue(line, "priority_level"), true })
	}
	const wait = "apiserver_flowcontrol_request_wait_duration_seconds"
	sum0, sum1 := level(before, wait+"_sum"), level(after, wait+"_sum")
	n0, n1 := level(before, wait+"_count"), level(after, wait+"_count")
	var parts []string
	for l, n := range n1 {
		if d := n - n0[l]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f × %.1f ms", l, d, 1000*(sum1[l]-sum0[l])/d))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
