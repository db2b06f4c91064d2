// Package cache keeps, per GitRepository, what the cluster holds: the
// commit, the spec generation and a content hash per resource applied from
// it (what the seed kept in ETS). Each repository actor carries the same in
// its own Memory; this is the copy that survives an actor's restart, so
// that a restarted actor does not re-send unchanged objects. No parsed
// objects are kept: a sync parses the checkout on disk when it needs them.
// The state lives in one actor; callers use the typed Client and never see
// actor PIDs.
package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"k8s.io/apimachinery/pkg/types"
)

// Entry is what the cache holds for one repository. Entries are shared,
// not copied: treat them as read-only once Put, and after Get.
type Entry struct {
	UID        types.UID // of the GitRepository the entry describes
	Commit     string
	Generation int64             // spec generation the objects were applied under
	Hashes     map[string]string // resource identity → content hash
}

// DefaultTimeout bounds a request when the caller's context has no earlier
// deadline.
const DefaultTimeout = 5 * time.Second

// Requests to the cache actor, answered with a reply.
type (
	get struct{ key string }
	put struct {
		key   string
		entry Entry
	}
	evict struct{ key string }
	found struct {
		entry Entry
		ok    bool
	}
	done struct{}
)

// store is the cache actor: a map only its mailbox touches.
type store struct{ entries map[string]Entry }

func (s *store) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *get:
		e, ok := s.entries[m.key]
		ctx.Respond(&found{entry: e, ok: ok})
	case *put:
		s.entries[m.key] = m.entry
		ctx.Respond(&done{})
	case *evict:
		delete(s.entries, m.key)
		ctx.Respond(&done{})
	}
}

// Client talks to a cache actor by request and response.
type Client struct {
	root    *actor.RootContext
	pid     *actor.PID
	timeout time.Duration
}

// Start spawns a cache actor under root. timeout bounds each request (0
// means DefaultTimeout).
func Start(root *actor.RootContext, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pid := root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &store{entries: map[string]Entry{}} }))
	return &Client{root: root, pid: pid, timeout: timeout}
}

// Get returns the entry of the repository key ("namespace/name").
func (c *Client) Get(ctx context.Context, key string) (Entry, bool, error) {
	res, err := c.ask(ctx, "get", key, &get{key: key})
	if err != nil {
		return Entry{}, false, err
	}
	f := res.(*found)
	return f.entry, f.ok, nil
}

// Put replaces the entry of the repository key.
func (c *Client) Put(ctx context.Context, key string, e Entry) error {
	_, err := c.ask(ctx, "put", key, &put{key: key, entry: e})
	return err
}

// Evict forgets the repository key, when it is deleted.
func (c *Client) Evict(ctx context.Context, key string) error {
	_, err := c.ask(ctx, "evict", key, &evict{key: key})
	return err
}

// Stop stops the cache actor and waits for it.
func (c *Client) Stop() error {
	if err := c.root.StopFuture(c.pid).Wait(); err != nil {
		return fmt.Errorf("stop cache actor: %w", err)
	}
	return nil
}

func (c *Client) ask(ctx context.Context, op, key string, msg any) (any, error) {
	timeout := c.timeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("cache %s %s: %w", op, key, context.DeadlineExceeded)
	}
	res, err := c.root.RequestFuture(c.pid, msg, timeout).Result()
	switch {
	case errors.Is(err, actor.ErrTimeout):
		return nil, fmt.Errorf("cache %s %s: no answer within %v: %w", op, key, timeout, err)
	case err != nil:
		return nil, fmt.Errorf("cache %s %s: cache actor is gone (stopped?): %w", op, key, err)
	}
	return res, nil
}
