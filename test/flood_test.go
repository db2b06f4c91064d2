package test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/test/testenv"
)

// floodKind is one sort of hostile or useless webhook delivery.
type floodKind struct {
	name   string
	code   int    // the status every one of them must get
	result string // its result label in alumiini_webhook_requests_total
}

var floodKinds = []floodKind{
	{"unsigned push for the watched repository", http.StatusUnauthorized, "unauthorized"},
	{"push for the watched repository signed with a wrong secret", http.StatusUnauthorized, "unauthorized"},
	{"oversized body", http.StatusRequestEntityTooLarge, "too_large"},
	{"malformed JSON, correctly signed", http.StatusBadRequest, "invalid"},
	{"signed push for an unknown repository", http.StatusNotFound, "unmatched"},
}

const (
	floodConcurrency = 32
	floodMaxBody     = 64 << 10 // --webhook-max-body-bytes of the flooded controller
	floodRSSBudget   = 64 << 20
)

// floodRequests is how many requests TestWebhookFlood sends: the issue's
// 10,000 (about 2 s on 2 cores, so make test runs it in full), 100,000 with
// ALUMIINI_SOAK=1, or ALUMIINI_FLOOD_REQUESTS.
func floodRequests(t *testing.T) int {
	if s := os.Getenv("ALUMIINI_FLOOD_REQUESTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < len(floodKinds) {
			t.Fatalf("ALUMIINI_FLOOD_REQUESTS=%q: want a number of at least %d", s, len(floodKinds))
		}
		return n
	}
	if os.Getenv("ALUMIINI_SOAK") == "1" {
		return 100000
	}
	return 10000
}

// TestWebhookFlood (issue 16): a flood of unsigned, wrongly signed,
// oversized, malformed and unknown-repository webhooks, 32 at a time, gets
// an answer for every request, grows the controller's memory by less than
// 64 MiB, triggers no sync, and a signed push right after is applied about
// as fast as one before the flood. The unsigned and wrongly signed pushes
// name a commit that is in git, so a sync they wrongly triggered would show
// in the cluster.
func TestWebhookFlood(t *testing.T) {
	ns, repo, first := appsRepo(t)
	ctrl := startController(t, "--webhook-secret-file", secretFile(t), "--watch-namespace", ns,
		"--webhook-max-body-bytes", strconv.Itoa(floodMaxBody))
	ctrl.waitReady(t)
	createRepo(t, ns, "apps", map[string]any{"url": repo.URL(), "interval": "1h", "reconcileInterval": "1h"})
	waitPhase(t, ns, "apps", v1alpha1.PhaseSynced, first, 60*time.Second)

	second := repo.CommitStrings("second", map[string]string{"a.yaml": configMapYAML("a", ns, "2")})
	before := signedPushApplied(t, ctrl, repo.URL(), second, ns, "2")
	waitWebhookSyncs(t, ctrl, 1)

	third := repo.CommitStrings("third", map[string]string{"a.yaml": configMapYAML("a", ns, "3")})
	rss0 := rssBytes(t, ctrl)
	requests0 := webhookResults(t, ctrl)
	n := floodRequests(t)
	start := time.Now()
	peak, failures := flood(t, ctrl, n, repo.URL(), third)
	t.Logf("flood: %d requests in %v, RSS %d MiB before, peak %d MiB", n, time.Since(start).Round(time.Millisecond), rss0>>20, peak>>20)
	for _, f := range failures {
		t.Error(f)
	}
	if grown, budget := peak-rss0, rssBudget(t); grown >= budget {
		t.Errorf("RSS grew by %d MiB during the flood, want under %d MiB", grown>>20, budget>>20)
	}
	checkWebhookResults(t, ctrl, requests0, n)
	// A wrongly triggered sync takes some 50 ms from reply to ConfigMap:
	// watch for one well past that.
	holdsFor(t, 2*time.Second, func() error {
		if got := ctrl.metricValue(t, "alumiini_syncs_total", `trigger="webhook"`); got != 1 {
			return fmt.Errorf("webhook-triggered syncs after the flood = %v, want still 1", got)
		}
		if v, _ := configMapValue(ns, "a"); v != "2" {
			return fmt.Errorf("ConfigMap a = %q after the flood, want still 2: an unauthenticated push was applied", v)
		}
		return nil
	})

	after := signedPushApplied(t, ctrl, repo.URL(), third, ns, "3")
	t.Logf("signed push to applied: %v before the flood, %v right after", before, after)
	if after > 3*before+time.Second {
		t.Errorf("a signed push after the flood took %v to apply, %v before it", after, before)
	}
	waitWebhookSyncs(t, ctrl, 2)
}

// signedPushApplied sends a signed push of commit and returns how long the
// ConfigMap a took to show value.
func signedPushApplied(t *testing.T, ctrl *proc, repoURL, commit, ns, value string) time.Duration {
	t.Helper()
	start := time.Now()
	if code, body := pushGitHub(t, ctrl.webhook, repoURL, commit); code != http.StatusAccepted {
		t.Fatalf("signed push = %d %s, want 202", code, body)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if v, _ := configMapValue(ns, "a"); v != value {
			return fmt.Errorf("ConfigMap a = %q, want %s", v, value)
		}
		return nil
	})
	return time.Since(start)
}

// holdsFor checks cond every 100 ms for window and fails at its first error.
func holdsFor(t *testing.T, window time.Duration, cond func() error) {
	t.Helper()
	testenv.Consistently(t, window, 100*time.Millisecond, cond)
}

// waitWebhookSyncs waits until exactly n webhook-triggered syncs are counted
// (the metric is recorded just after the status is written).
func waitWebhookSyncs(t *testing.T, ctrl *proc, n float64) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := ctrl.metricValue(t, "alumiini_syncs_total", `trigger="webhook"`); got != n {
			return fmt.Errorf("webhook-triggered syncs = %v, want %v", got, n)
		}
		return nil
	})
}

// flood sends n requests, floodConcurrency at a time, cycling through
// floodKinds, while sampling the controller's RSS. It returns the peak RSS
// and a description of each kind of failure (at most one per kind).
func flood(t *testing.T, ctrl *proc, n int, repoURL, commit string) (int64, []string) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: floodConcurrency, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var peak atomic.Int64
	peak.Store(rssBytes(t, ctrl))
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if rss, err := readRSS(ctrl.cmd.Process.Pid); err == nil && rss > peak.Load() {
					peak.Store(rss)
				}
			}
		}
	}()

	failed := make([]atomic.Pointer[string], len(floodKinds))
	next := make(chan int)
	var wg sync.WaitGroup
	for range floodConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				k := i % len(floodKinds)
				if err := floodOnce(client, ctrl.webhook, k, repoURL, commit); err != nil {
					msg := fmt.Sprintf("%s (request %d): %v", floodKinds[k].name, i, err)
					failed[k].CompareAndSwap(nil, &msg)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(stop)
	<-sampled
	if rss, err := readRSS(ctrl.cmd.Process.Pid); err == nil && rss > peak.Load() {
		peak.Store(rss)
	}
	var failures []string
	for i := range failed {
		if p := failed[i].Load(); p != nil {
			failures = append(failures, *p)
		}
	}
	return peak.Load(), failures
}

// floodOnce sends one request of kind k and checks its status.
func floodOnce(client *http.Client, addr string, k int, repoURL, commit string) error {
	body, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "after": commit,
		"repository": map[string]any{"clone_url": repoURL},
	})
	secret := webhookSecret
	switch k {
	case 1:
		secret = "not-the-webhook-secret"
	case 2:
		pad := strings.Repeat("x", 2*floodMaxBody)
		body, _ = json.Marshal(map[string]any{"ref": "refs/heads/main", "after": commit, "padding": pad,
			"repository": map[string]any{"clone_url": repoURL}})
	case 3:
		body = body[:len(body)/2]
	case 4:
		body = bytes.ReplaceAll(body, []byte(repoURL), []byte("https://nowhere.example/flood.git"))
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/webhook/github", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	if k != 0 {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != floodKinds[k].code {
		return fmt.Errorf("status %d %s, want %d", resp.StatusCode, reply, floodKinds[k].code)
	}
	return nil
}

// webhookResults reads alumiini_webhook_requests_total by result.
func webhookResults(t *testing.T, ctrl *proc) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, k := range floodKinds {
		m[k.result] = ctrl.metricValue(t, "alumiini_webhook_requests_total", `result="`+k.result+`"`)
	}
	return m
}

// checkWebhookResults checks that the controller counted every flood
// request under the result of its kind.
func checkWebhookResults(t *testing.T, ctrl *proc, before map[string]float64, n int) {
	t.Helper()
	want := map[string]float64{}
	for i := range n {
		want[floodKinds[i%len(floodKinds)].result]++
	}
	got := webhookResults(t, ctrl)
	for result, w := range want {
		if d := got[result] - before[result]; d != w {
			t.Errorf("alumiini_webhook_requests_total{result=%q} grew by %v, want %v", result, d, w)
		}
	}
}

// rssBudget is how much the controller's RSS may grow during the flood:
// 64 MiB, times 8 for a binary built with -race (ALUMIINI_TEST_BINARY, as
// make race runs), whose detector keeps 5 to 10 times the memory (measured:
// 160 MiB of growth for 10,000 requests, against about 30 MiB without it).
func rssBudget(t *testing.T) int64 {
	info, err := buildinfo.ReadFile(controllerBinary(t))
	if err != nil {
		t.Fatalf("read the controller binary's build info: %v", err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return 8 * floodRSSBudget
		}
	}
	return floodRSSBudget
}

// rssBytes is the controller's resident set size.
func rssBytes(t *testing.T, ctrl *proc) int64 {
	t.Helper()
	rss, err := readRSS(ctrl.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return rss
}

// readRSS reads VmRSS from /proc/<pid>/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
