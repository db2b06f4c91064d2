package webhook

import (
	"slices"
	"strings"
	"sync"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// defaultPort is the port a scheme implies, dropped from URLs so that
// https://host:443/x is https://host/x.
func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	case "ssh", "git+ssh", "ssh+git":
		return "22"
	case "git":
		return "9418"
	}
	return ""
}

// NormalizeURL reduces a git remote URL to "host[:port]/path" so that the
// forms a provider reports (clone, SSH, HTML) and the form a user wrote in
// spec.url compare equal. It drops the scheme, user and password, a default
// port, query and fragment, a ".git" suffix and surrounding slashes, and
// lower-cases the host. It reads the scp-like form user@host:path as git does
// (a colon before any slash). file:// URLs become their absolute path.
// Nothing is rejected: input that is not a URL is reduced the same way and
// then simply matches nothing.
func NormalizeURL(raw string) string {
	s := strings.TrimSpace(raw)
	var scheme, authority, path string
	if i := strings.Index(s, "://"); i > 0 && isScheme(s[:i]) {
		scheme = strings.ToLower(s[:i])
		authority, path, _ = strings.Cut(s[i+3:], "/")
	} else if i := strings.IndexByte(s, ':'); i > 0 && !strings.Contains(s[:i], "/") {
		authority, path = s[:i], s[i+1:]
	} else {
		authority, path, _ = strings.Cut(s, "/")
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimRight(strings.TrimSuffix(strings.Trim(path, "/"), ".git"), "/")

	host := hostPort(scheme, authority)
	if path == "" {
		return host
	}
	return host + "/" + path
}

// hostPort strips user information from an authority, lower-cases the host
// and drops the scheme's default port.
func hostPort(scheme, authority string) string {
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = authority[i+1:]
	}
	host, port := authority, ""
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && i > strings.LastIndexByte(authority, ']') {
		host, port = authority[:i], authority[i+1:]
	}
	host = strings.ToLower(host)
	if port == "" || port == defaultPort(scheme) {
		return host
	}
	return host + ":" + port
}

// isScheme reports whether s is a URL scheme as RFC 3986 spells it.
func isScheme(s string) bool {
	for i, c := range s {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// matcher finds the repositories whose spec.url names the repository of a
// payload. Paths compare without regard to case because GitHub, GitLab and
// Bitbucket treat owner and repository names so: a needless sync costs one
// fetch, a missed one leaves the cluster behind.
//
// It memoises the match key of each spec.url, since normalising every URL
// on every request costs milliseconds with 10,000 repositories.
type matcher struct {
	mu   sync.Mutex
	keys map[string]string // spec.url -> matchKey
}

func matchKey(url string) string { return strings.ToLower(NormalizeURL(url)) }

// candidates returns the repositories named by any of the payload's urls.
func (m *matcher) candidates(repos []*v1alpha1.GitRepository, urls []string) []*v1alpha1.GitRepository {
	var want []string
	for _, u := range urls {
		if k := matchKey(u); k != "" {
			want = append(want, k)
		}
	}
	if len(want) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil || len(m.keys) > 2*len(repos)+100 {
		m.keys = make(map[string]string, len(repos)) // forget URLs no repository uses any more
	}
	var out []*v1alpha1.GitRepository
	for _, repo := range repos {
		k, ok := m.keys[repo.Spec.URL]
		if !ok {
			k = matchKey(repo.Spec.URL)
			m.keys[repo.Spec.URL] = k
		}
		if k != "" && slices.Contains(want, k) {
			out = append(out, repo)
		}
	}
	return out
}

// followedRef is the full ref whose pushes trigger a repository, or "" for a
// commit-pinned one, which no push can move.
func followedRef(spec *v1alpha1.GitRepositorySpec) string {
	ref := spec.GitRef()
	switch {
	case ref.Commit != "":
		return ""
	case ref.Tag != "":
		return "refs/tags/" + ref.Tag
	default:
		return "refs/heads/" + ref.Branch
	}
}

// changeFor returns the update of the ref a repository follows, if the push
// moved it.
func (ev event) changeFor(spec *v1alpha1.GitRepositorySpec) (change, bool) {
	want := followedRef(spec)
	for _, c := range ev.changes {
		if want != "" && !c.deleted && c.ref == want {
			return c, true
		}
	}
	return change{}, false
}
