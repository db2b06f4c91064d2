// Command summarize folds several runs of the scale harness
// (test/scale_test.go) into the medians docs/benchmarks.md reports: it
// reads the results.json files named on its command line and writes
// summary.md (a table of median, range and run count per figure and
// point, with targets and Flux's figures beside them) and the charts
// memory.png and latency.png drawn from the medians, into -out.
//
//	go run ./test/benchchart/summarize -out docs/bench/summary docs/bench/results-*.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/false-systems/alumiini/test/benchchart"
)

func main() {
	out := flag.String("out", ".", "directory to write summary.md and the charts into")
	flag.Parse()
	if err := run(*out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "summarize:", err)
		os.Exit(1)
	}
}

func run(out string, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("name the results.json files to summarize")
	}
	var runs [][]benchchart.Point
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var points []benchchart.Point
		if err := json.Unmarshal(data, &points); err != nil {
			return fmt.Errorf("%s: %w (want the JSON array of points the scale harness writes)", f, err)
		}
		runs = append(runs, points)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	sums := benchchart.Summarize(runs)
	var b strings.Builder
	fmt.Fprintf(&b, "Medians over %d runs of the scale harness (%s); a run counts at a point when it measured that figure there.\n\n",
		len(files), names(files))
	if err := benchchart.WriteTable(&b, sums); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "summary.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	return benchchart.Draw(out, benchchart.Medians(sums), benchchart.Flux())
}

func names(files []string) string {
	base := make([]string, len(files))
	for i, f := range files {
		base[i] = "`" + filepath.Base(f) + "`"
	}
	return strings.Join(base, ", ")
}
