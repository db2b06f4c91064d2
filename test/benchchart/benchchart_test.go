package benchchart

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestSlope(t *testing.T) {
	rss := func(p Point) float64 { return p.RSSKiB }
	tests := []struct {
		name   string
		points []Point
		want   float64
	}{
		{"none", nil, 0},
		{"one point", []Point{{Repos: 100, RSSKiB: 5000}}, 0},
		{"exact line", []Point{{Repos: 100, RSSKiB: 6000}, {Repos: 1000, RSSKiB: 33000}, {Repos: 10000, RSSKiB: 303000}}, 30},
		{"noisy middle", []Point{{Repos: 0, RSSKiB: 0}, {Repos: 10, RSSKiB: 12}, {Repos: 20, RSSKiB: 20}}, 1},
		{"same x", []Point{{Repos: 5, RSSKiB: 1}, {Repos: 5, RSSKiB: 2}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Slope(tt.points, rss); math.Abs(got-tt.want) > 1e-9 {
				t.Fatalf("Slope = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDrawWritesBothCharts(t *testing.T) {
	dir := t.TempDir()
	points := []Point{{Repos: 100, RSSKiB: 40000, HeapKiB: 20000, PushP50Ms: 40, PushP99Ms: 80},
		{Repos: 1000, RSSKiB: 70000, HeapKiB: 40000, PushP50Ms: 45, PushP99Ms: 90}}
	if err := Draw(dir, points, Flux()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"memory.png", "latency.png"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 8 || string(data[1:4]) != "PNG" {
			t.Fatalf("%s is not a PNG (%d bytes)", name, len(data))
		}
	}
}
