package benchchart

import (
	"reflect"
	"strings"
	"testing"
)

func TestSpread(t *testing.T) {
	tests := []struct {
		vs   []float64
		want Spread
	}{
		{[]float64{7}, Spread{7, 7, 7, 1}},
		{[]float64{3, 1, 2}, Spread{2, 1, 3, 3}},
		{[]float64{4, 1, 3, 2}, Spread{2.5, 1, 4, 4}},
	}
	for _, tt := range tests {
		if got := spread(tt.vs); got != tt.want {
			t.Errorf("spread(%v) = %+v, want %+v", tt.vs, got, tt.want)
		}
	}
}

// Summarize groups by point across runs and leaves out what a run did not
// measure (a zero), so that an older run lowers no median.
func TestSummarize(t *testing.T) {
	runs := [][]Point{
		{{Repos: 100, PushP50Ms: 60, LiveKiB: 0}, {Repos: 1000, PushP50Ms: 80, PushP99Ms: 120, LiveKiB: 2048, RSSKiB: 3072, HeapKiB: 1024}},
		{{Repos: 1000, PushP50Ms: 70, LiveKiB: 4096}},
		{{Repos: 1000, PushP50Ms: 90, LiveKiB: 0}, {Repos: 100, PushP50Ms: 50}},
	}
	sums := Summarize(runs)
	if len(sums) != 2 || sums[0].Repos != 100 || sums[1].Repos != 1000 {
		t.Fatalf("points %+v, want 100 then 1000", sums)
	}
	if got := sums[0].Figures["push → applied p50"]; got != (Spread{55, 50, 60, 2}) {
		t.Errorf("p50 at 100 = %+v", got)
	}
	if got := sums[1].Figures["push → applied p50"]; got != (Spread{80, 70, 90, 3}) {
		t.Errorf("p50 at 1000 = %+v", got)
	}
	if got := sums[1].Figures["live heap, settled"]; got != (Spread{3, 2, 4, 2}) {
		t.Errorf("live heap at 1000 = %+v, want the two measured runs' (MiB)", got)
	}
	if _, ok := sums[0].Figures["live heap, settled"]; ok {
		t.Error("live heap at 100 has a figure though no run measured it")
	}
	want := Point{Repos: 1000, PushP50Ms: 80, PushP99Ms: 120, RSSKiB: 3072, HeapKiB: 1024}
	if got := Medians(sums)[1]; !reflect.DeepEqual(got, want) {
		t.Errorf("Medians()[1] = %+v, want %+v", got, want)
	}
}

func TestWriteTable(t *testing.T) {
	runs := [][]Point{
		{{Repos: 100, RSSKiB: 100 * 1024, PushP50Ms: 60}, {Repos: 1000, RSSKiB: 130 * 1024, PushP50Ms: 62}},
		{{Repos: 1000, RSSKiB: 140 * 1024, PushP50Ms: 70}},
	}
	var b strings.Builder
	if err := WriteTable(&b, Summarize(runs)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| figure | 100 | 1,000 | target | Flux v2.9.4 |",
		"| push → applied p50 (ms) | 60.0 (1 run) | **66.0** (62.0–70.0, 2 runs) | < 50 |",
		"| live heap, settled (MiB) | — | — | — | — |",
		// (135 − 100) MiB over 900 repositories
		"RSS **39.8 KiB** per added repository",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
