package clustertest

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
	"github.com/false-systems/alumiini/k8s"
	"github.com/false-systems/alumiini/test/testenv"
)

// BenchmarkDriftCheck is what one periodic drift check of a repository of
// 20 ConfigMaps costs the controller: its CPU (cpu-µs/op, from getrusage,
// as the API server is another process) and its API requests (req/op).
//
//   - quiet: nothing moved, and the MoveWatch saw no event: no request;
//   - listed: the same without a MoveWatch: a metadata list per kind and
//     namespace;
//   - drifted: another writer edited one object before each check: the
//     list, then a dry-run apply of the object that moved (the full
//     check, as the pipeline runs it once Moved says so).
func BenchmarkDriftCheck(b *testing.B) {
	for _, bc := range []struct {
		name         string
		watch, edits bool
	}{{"quiet", true, false}, {"listed", false, false}, {"drifted", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			ns := env.Namespace(b)
			files := map[string]string{}
			for i := range 20 {
				files[fmt.Sprintf("cm-%02d.yaml", i)] = configMap(fmt.Sprintf("cm-%02d", i), "git")
			}
			objs := load(b, files)
			var options []k8s.ApplierOption
			if bc.watch {
				watches, stop := context.WithCancel(context.Background())
				b.Cleanup(stop)
				options = append(options, k8s.WithMoveWatch(watches, nil))
			}
			a, count := countingApplier(b, options...)
			opts := k8s.Options{Owner: k8s.Owner{Namespace: ns, Name: "r"}, Prune: true}
			res, err := a.Apply(ctx(b), objs, opts)
			if err != nil || len(res.Failed) > 0 {
				b.Fatalf("apply: %v %v", err, res.Failed)
			}
			versions := res.Versions
			requests := func() int { return count("", "") }
			// check is one drift check as the pipeline's driftQuick and
			// driftCheck make it.
			check := func() {
				moved, err := a.Moved(ctx(b), res.Inventory, versions, opts)
				if err != nil {
					b.Fatal(err)
				}
				if !moved {
					return
				}
				d, err := a.Drift(ctx(b), objs, k8s.Options{Owner: opts.Owner, Inventory: res.Inventory, Versions: versions}, v1alpha1.DriftDetect)
				if err != nil {
					b.Fatal(err)
				}
				versions = d.Versions
			}
			if bc.watch { // until the watch is established, checks list
				testenv.Eventually(b, 30*time.Second, func() error {
					before := requests()
					check()
					if n := requests() - before; n != 0 {
						return fmt.Errorf("a quiet check sent %d requests", n)
					}
					return nil
				})
			}
			cms := env.Kube.CoreV1().ConfigMaps(ns)
			sent, cpu := 0, time.Duration(0)
			for i := 0; b.Loop(); i++ {
				if bc.edits {
					b.StopTimer()
					cm, err := cms.Get(ctx(b), "cm-00", metav1.GetOptions{})
					if err != nil {
						b.Fatal(err)
					}
					cm.Data["key"] = fmt.Sprint("edit-", i)
					if _, err := cms.Update(ctx(b), cm, metav1.UpdateOptions{}); err != nil {
						b.Fatal(err)
					}
					// Once the watch has seen the edit, Moved says so until
					// a check records the new version.
					testenv.Eventually(b, 10*time.Second, func() error {
						if moved, err := a.Moved(ctx(b), res.Inventory, versions, opts); err != nil || !moved {
							return fmt.Errorf("the edit is not seen yet (%v)", err)
						}
						return nil
					})
					b.StartTimer()
				}
				before, started := requests(), cpuTime(b)
				check()
				sent += requests() - before
				cpu += cpuTime(b) - started
			}
			b.ReportMetric(float64(sent)/float64(b.N), "req/op")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
