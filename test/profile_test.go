package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// profileSegment is the length of one CPU profile. The controller's metrics
// server has a 30 s write timeout, which net/http/pprof refuses to exceed,
// so a window is covered by consecutive segments; `go tool pprof` merges
// them (pass every file).
const profileSegment = 25 * time.Second

// cpuProfiles records consecutive CPU profiles of the controller and of
// kube-apiserver into dir (ALUMIINI_BENCH_PROFILE) until the returned stop
// is called, as <label>-controller-NN.pprof and <label>-apiserver-NN.pprof.
// It explains the figures of a window; profiling itself costs a few per
// cent of CPU, so profiled runs are read for shares, not for the totals.
// With dir "" it does nothing.
func cpuProfiles(b *testing.B, dir, label string, ctrl *proc) (stop func()) {
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	record := func(name string, fetch func(ctx context.Context) (io.ReadCloser, error)) {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if err := saveProfile(ctx, filepath.Join(dir, fmt.Sprintf("%s-%s-%02d.pprof", label, name, i)), fetch); err != nil && ctx.Err() == nil {
				b.Logf("profile %s %s: %v", label, name, err)
				return
			}
		}
	}
	seconds := int(profileSegment.Seconds())
	if ctrl != nil {
		wg.Add(1)
		go record("controller", func(ctx context.Context) (io.ReadCloser, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", ctrl.metrics, seconds), nil)
			if err != nil {
				return nil, err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				return nil, fmt.Errorf("controller pprof: %s", resp.Status)
			}
			return resp.Body, nil
		})
	}
	wg.Add(1)
	go record("apiserver", func(ctx context.Context) (io.ReadCloser, error) {
		return env.Kube.Discovery().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", fmt.Sprint(seconds)).Timeout(profileSegment + 15*time.Second).Stream(ctx)
	})
	return func() { cancel(); wg.Wait() }
}

// saveProfile writes one profile segment to path; a segment cut short by
// the end of the window is dropped, not kept half-written.
func saveProfile(ctx context.Context, path string, fetch func(ctx context.Context) (io.ReadCloser, error)) error {
	body, err := fetch(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
