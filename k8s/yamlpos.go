package k8s

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"

	yamlv3 "gopkg.in/yaml.v3"
)

// yamlLine matches the position yaml.v3 puts in a syntax error.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// positionedYAMLError names a syntax error of document doc (1-based, as
// utilyaml.YAMLReader numbers them) of the file rel as rel:line:column,
// with the line counted in the whole file, for example
// "deploy/app.yaml:12:3: mapping values are not allowed in this context".
// yaml.v3 (gopkg.in/yaml.v3, the chosen YAML library) reports the
// line; the column is that of the line's first character, as the parser
// does not report one. It returns nil when yaml.v3 finds no position.
func positionedYAMLError(rel string, data []byte, doc int) error {
	lines := bytes.Split(data, []byte("\n"))
	start := docStartLine(lines, doc)
	if start == 0 {
		return nil
	}
	var n yamlv3.Node
	err := yamlv3.Unmarshal(bytes.Join(lines[start-1:], []byte("\n")), &n)
	if err == nil {
		return nil
	}
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	rel0, _ := strconv.Atoi(m[1])
	line := start + rel0 - 1
	col := 1
	if line-1 < len(lines) {
		col += len(lines[line-1]) - len(bytes.TrimLeft(lines[line-1], " \t"))
	}
	return fmt.Errorf("%s:%d:%d: %s", rel, line, col, m[2])
}

// docStartLine returns the 1-based line where document doc begins, with
// the separator rules of utilyaml.YAMLReader ("---" alone on a line ends a
// document that has at least one line); 0 when there is no such document.
func docStartLine(lines [][]byte, doc int) int {
	start, seen, n := 1, false, 1
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte("---")) && len(bytes.TrimSpace(l[3:])) == 0 {
			if seen {
				n++
				seen = false
			}
			start = i + 2
			continue
		}
		if n == doc {
			return start
		}
		seen = true
	}
	return 0
}
