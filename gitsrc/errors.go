package gitsrc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/crypto/ssh/knownhosts"
)

// fetchError is one actionable sentence for status.message that still
// unwraps to the transport's error, so callers can test it with errors.Is.
type fetchError struct {
	msg   string
	cause error
}

func (e *fetchError) Error() string { return e.msg }
func (e *fetchError) Unwrap() error { return e.cause }

// explain turns a transport error from op (say, "list refs of") into a
// sentence naming the URL, never its credentials, and what to fix.
func (s *session) explain(op string, err error) error {
	prefix := op + " " + s.r.display + ": "
	var hostKey *knownhosts.KeyError
	var unknownCA x509.UnknownAuthorityError
	var why string
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "connection refused; check the host and port in spec.url and that the git server is running"
	case httpStatus(err) >= 500:
		why = fmt.Sprintf("the git server failed with HTTP %d; it is down or overloaded, check its health", httpStatus(err))
	case s.r.kind == "ssh" && timedOut(err):
		host, port, _ := net.SplitHostPort(s.r.host)
		why = fmt.Sprintf("timed out: %s did not complete the SSH handshake or the transfer within spec.timeout (a stalled sshd, or a firewall or proxy that accepts connections and forwards nothing); check that it is the git host's SSH port (ssh -vT -p %s git@%s shows where it stops), or raise spec.timeout", s.r.host, port, host)
	case timedOut(err):
		why = "timed out; check that the server is reachable, or raise spec.timeout"
	case errors.Is(err, context.Canceled):
		why = "canceled"
	case errors.Is(err, transport.ErrAuthenticationRequired) && s.method == nil:
		why = "the server requires authentication; set spec.secretRef to a Secret with username and password, or bearerToken"
	case errors.Is(err, transport.ErrAuthenticationRequired):
		why = fmt.Sprintf("the server refused the credentials in %s; check the username and password, or bearerToken", s.credentials())
	case errors.Is(err, transport.ErrAuthorizationFailed):
		why = fmt.Sprintf("the credentials in %s may not read this repository; grant them read access", s.credentials())
	case errors.Is(err, transport.ErrRepositoryNotFound):
		why = "repository not found; check spec.url (some servers also answer this for a private repository without valid credentials)"
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		why = "the repository is empty; push a commit to it"
	case errors.As(err, &unknownCA):
		why = fmt.Sprintf("the server's TLS certificate is not signed by a trusted CA; put the CA certificate under key %q of the Secret", KeyCA)
	case errors.As(err, &hostKey) && len(hostKey.Want) == 0:
		host, port, _ := net.SplitHostPort(s.r.host)
		why = fmt.Sprintf("host key of %s is not in key %q of %s; add it (ssh-keyscan -p %s %s)", s.r.host, KeyKnownHosts, s.auth.String(), port, host)
	case errors.As(err, &hostKey):
		why = fmt.Sprintf("host key of %s does not match key %q of %s: the host key changed or the connection is intercepted; verify the new key before trusting it", s.r.host, KeyKnownHosts, s.auth.String())
	case strings.Contains(err.Error(), "ssh: unable to authenticate"):
		why = fmt.Sprintf("the server refused the SSH key in key %q of %s; add its public key to the repository's deploy keys with read access", KeyIdentity, s.auth.String())
	default:
		why = err.Error()
	}
	return &fetchError{msg: prefix + why, cause: err}
}

// timedOut reports a deadline, whether the context's or, for SSH, the one
// set on the connection (see sshdial.go).
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}

// credentials names where the credentials of this session came from.
func (s *session) credentials() string {
	if s.auth == nil && s.r.user != "" {
		return "spec.url"
	}
	return s.auth.String()
}

// httpStatus is the HTTP status of a failed smart-HTTP request, or 0. go-git
// wraps it in an UnexpectedError that does not unwrap.
func httpStatus(err error) int {
	var unexpected *plumbing.UnexpectedError
	if errors.As(err, &unexpected) {
		err = unexpected.Err
	}
	var httpErr *githttp.Err
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}
