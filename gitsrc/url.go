package gitsrc

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// remote is a parsed spec.url.
type remote struct {
	fetch   string // what go-git dials: http(s) userinfo removed
	display string // safe for errors and logs: never holds a password or token
	kind    string // "http", "ssh" or "file"
	host    string // host:port, for SSH host key algorithms
	user    string // SSH user, or http(s) userinfo used when there is no Secret
	pass    string // http(s) userinfo password, used when there is no Secret
}

var errBadURL = errors.New("spec.url is not a valid git URL; use https://, http://, ssh://, git@host:org/repo.git or file:///path")

// parseRemote accepts the URL forms of the design: https, http, ssh://,
// scp-like user@host:path, and file://. Credentials in an http(s) URL are
// taken out of it, so go-git never sees (and no error can echo) them.
func parseRemote(raw string) (remote, error) {
	if strings.HasPrefix(raw, "https://") || strings.HasPrefix(raw, "http://") {
		// Without go-git's endpoint parser, whose scp-like URL matching was
		// half of what a quiet poll cost.
		return parseHTTP(raw)
	}
	ep, err := transport.NewEndpoint(raw)
	if err != nil {
		// The parse error would quote the URL, credentials and all.
		return remote{}, errBadURL
	}
	switch ep.Protocol {
	case "https", "http":
		return parseHTTP(raw)
	case "ssh":
		user := ep.User
		if user == "" {
			user = "git"
		}
		display := raw // scp-like URLs cannot hold a password
		if strings.HasPrefix(raw, "ssh://") {
			ep.Password = ""
			display = ep.String()
		}
		return remote{fetch: raw, display: display, kind: "ssh", host: hostPort(ep.Host, ep.Port), user: user}, nil
	case "file":
		if !strings.HasPrefix(raw, "file://") {
			return remote{}, errBadURL // a bare path: ask for the explicit form
		}
		return remote{fetch: raw, display: raw, kind: "file"}, nil
	}
	return remote{}, errBadURL
}

// parseHTTP parses an http(s) URL, taking any credentials out of it.
func parseHTTP(raw string) (remote, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return remote{}, errBadURL
	}
	r := remote{kind: "http", host: u.Host}
	if u.User != nil {
		r.user = u.User.Username()
		r.pass, _ = u.User.Password()
		u.User = nil
	}
	r.fetch, r.display = u.String(), u.String()
	return r, nil
}

func hostPort(host string, port int) string {
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
