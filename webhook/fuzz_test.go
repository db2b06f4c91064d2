package webhook

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fuzz targets run their seed corpus as ordinary tests; `go test -fuzz`
// explores further. Each parser must turn any body into an event or an error,
// never a panic, and an event must be well formed.

func FuzzParseGitHub(f *testing.F) {
	addFixtures(f, "github-*.json")
	f.Add([]byte(`{"ref":"refs/heads/main","after":"0","head_commit":null,"repository":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, kind := range []string{"push", "ping"} {
			ev, err := parseGitHub(hdr("X-GitHub-Event", kind), body)
			checkEvent(t, ev, err)
		}
		form := hdr("X-GitHub-Event", "push", "Content-Type", "application/x-www-form-urlencoded")
		ev, err := parseGitHub(form, body)
		checkEvent(t, ev, err)
	})
}

func FuzzParseGitLab(f *testing.F) {
	addFixtures(f, "gitlab-*.json")
	f.Add([]byte(`{"event_name":"tag_push","ref":"refs/tags/v1","checkout_sha":null,"project":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, kind := range []string{"Push Hook", "Tag Push Hook", "System Hook"} {
			ev, err := parseGitLab(hdr("X-Gitlab-Event", kind), body)
			checkEvent(t, ev, err)
		}
	})
}

func FuzzParseBitbucket(f *testing.F) {
	addFixtures(f, "bitbucket-*.json")
	f.Add([]byte(`{"push":{"changes":[{"new":null},{"new":{"type":"tag"}}]},"repository":{"links":{"html":{}}}}`))
	f.Add([]byte(`{"changes":[{"refId":"refs/heads/x","type":"DELETE"}],"repository":{"links":{"clone":[{}]}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, key := range []string{"repo:push", "repo:refs_changed", "diagnostics:ping"} {
			ev, err := parseBitbucket(hdr("X-Event-Key", key), body)
			checkEvent(t, ev, err)
		}
	})
}

func FuzzParseGeneric(f *testing.F) {
	addFixtures(f, "generic-*.json")
	f.Add([]byte(`{"url":"git@h:o/r","ref":"main","commit":"0000000"}`))
	f.Add([]byte(`{"url":"","ref":"refs/tags/v1"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := parseGeneric(http.Header{}, body)
		checkEvent(t, ev, err)
		if err == nil && !strings.HasPrefix(ev.changes[0].ref, "refs/") {
			t.Errorf("generic ref %q is not a full ref", ev.changes[0].ref)
		}
	})
}

// FuzzNormalizeURL checks that normalisation never panics, that its result
// never ends in a slash, and that the https, ssh and
// scp-like spellings of one host and path agree.
func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []struct{ raw, host, path string }{
		{"https://GitHub.com:443/org/repo.git/", "github.com", "org/repo"},
		{"git@github.com:org/repo.git", "GitLab.Example.com", "group/sub/repo"},
		{"ssh://git@[::1]:7999/p/r.git", "h", ""},
		{"file:///srv/git/r.git", "bitbucket.org", "/ws/r/"},
		{"user:pw@host:path?x#y", "h-1.example", "a.git.b"},
	} {
		f.Add(s.raw, s.host, s.path)
	}
	f.Fuzz(func(t *testing.T, raw, host, path string) {
		n := NormalizeURL(raw)
		if strings.HasSuffix(n, "/") && n != "/" {
			t.Errorf("NormalizeURL(%q) = %q ends in a slash", raw, n)
		}

		path = strings.Trim(path, "/")
		if !plain(host, ".-") || !plain(path, "._~/-") || strings.HasSuffix(path, ".git") {
			return // not a host and path a provider would report
		}
		want := NormalizeURL("https://" + host + "/" + path)
		for _, form := range []string{
			"https://" + strings.ToUpper(host) + ":443/" + path + ".git",
			"ssh://git@" + host + "/" + path + ".git/",
			"git@" + host + ":" + path + ".git",
			host + "/" + path,
		} {
			if got := NormalizeURL(form); got != want {
				t.Errorf("NormalizeURL(%q) = %q, but its https form gives %q", form, got, want)
			}
		}
	})
}

// plain reports whether s is non-empty or a path, and made of ASCII letters,
// digits and the extra characters only.
func plain(s, extra string) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune(extra, c)) {
			return false
		}
	}
	return s != "" || strings.Contains(extra, "/")
}

// checkEvent fails on a malformed event: a parse yields an error, an ignored
// event, a ping, or a push with changes whose live refs are named.
func checkEvent(t *testing.T, ev event, err error) {
	t.Helper()
	if err != nil {
		return
	}
	if ev.ignore != "" || ev.ping {
		if len(ev.changes) != 0 {
			t.Errorf("ignored or ping event carries changes: %+v", ev)
		}
		return
	}
	if len(ev.changes) == 0 {
		t.Errorf("push without changes: %+v", ev)
	}
	for _, c := range ev.changes {
		if !c.deleted && c.ref == "" {
			t.Errorf("live change without a ref: %+v", ev)
		}
	}
	for _, u := range ev.urls {
		if u == "" {
			t.Errorf("empty URL in %+v", ev)
		}
	}
}

func addFixtures(f *testing.F, glob string) {
	files, err := filepath.Glob(filepath.Join("testdata", glob))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures match %s: %v", glob, err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
