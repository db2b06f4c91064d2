package gitsrc

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/net/proxy"
)

// go-git v5 dials SSH servers itself, without the fetch's context, and the
// SSH handshake that follows has no timeout at all: a server that accepts
// the connection and then stalls would hold the fetch (and its sync slot)
// forever. go-git's only per-fetch hook into that dial is the proxy URL of
// FetchOptions.ProxyOptions, resolved through x/net/proxy's scheme registry.
// So SSH fetches name this scheme, whose URL carries the fetch's deadline,
// and the dialer below puts that deadline on the connection: the dial, the
// handshake and the transfer all end by it. The URL holds everything the
// dialer needs, so nothing but the registration itself is shared.
const deadlineScheme = "alumiini-deadline"

func init() {
	// Registered once, before any fetch can read the registry.
	proxy.RegisterDialerType(deadlineScheme, func(u *url.URL, _ proxy.Dialer) (proxy.Dialer, error) {
		deadline, err := time.Parse(time.RFC3339Nano, u.Query().Get("deadline"))
		if err != nil {
			return nil, fmt.Errorf("gitsrc: bad SSH dial deadline in %q: %w", u.Redacted(), err)
		}
		return deadlineDialer{deadline: deadline}, nil
	})
}

// sshProxy is the ProxyOptions that bound an SSH fetch by deadline; none
// when the fetch has no deadline.
func sshProxy(deadline time.Time) transport.ProxyOptions {
	if deadline.IsZero() {
		return transport.ProxyOptions{}
	}
	q := url.Values{"deadline": {deadline.UTC().Format(time.RFC3339Nano)}}
	return transport.ProxyOptions{URL: deadlineScheme + "://ssh/?" + q.Encode()}
}

// proxy is the ProxyOptions of one request of s: for SSH, ctx's deadline.
func (s *session) proxy(ctx context.Context) transport.ProxyOptions {
	if s.r.kind != "ssh" {
		return transport.ProxyOptions{}
	}
	deadline, _ := ctx.Deadline()
	return sshProxy(deadline)
}

// deadlineDialer dials as go-git does without a proxy (honouring ALL_PROXY
// and NO_PROXY), then sets its deadline on the connection.
type deadlineDialer struct{ deadline time.Time }

func (d deadlineDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d deadlineDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, d.deadline)
	defer cancel()
	conn, err := proxy.Dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(d.deadline); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}
