package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/false-systems/alumiini/actors/view"
)

// StatusFunc reports the state of the repository actor that this member
// runs for key ("namespace/name"), as the local /debug endpoint shows it.
// Its error wraps actors.ErrNotFound when this member runs no such actor.
type StatusFunc func(ctx context.Context, key string) (view.Repository, error)

const (
	opStatus = "status"
	// viewField holds the owner's view.Repository as JSON. A Struct's
	// numbers are doubles, so the view's int64 generation would pass through
	// a float64, and its times would need converting both ways; the JSON
	// the HTTP endpoint writes anyway travels as one string, exactly, with
	// no generated message to register with the engine.
	viewField = "view"
	// statusTimeout bounds the owner's wait for its repository actor. It is
	// below the caller's bound (cmd/alumiini: 4s), so that a stuck actor is
	// reported by the owner, by name, rather than as a lost request.
	statusTimeout = 3 * time.Second
)

// statusReply answers {"op": "status"} on the owner: its actor's view of key.
func statusReply(local StatusFunc, key string) (*structpb.Struct, error) {
	if local == nil {
		return nil, fmt.Errorf("status of %s: this member serves no status", key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	v, err := local(ctx, key)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", key, err)
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{viewField: structpb.NewStringValue(string(b))}}, nil
}

// Status asks the owner of repository key what its actor is doing. The
// error wraps actors.ErrNotFound when the owner runs no actor for key (no
// such GitRepository, or one the owner has not started yet); any other
// error means the owner could not answer, and names it.
func (n *Node) Status(ctx context.Context, key string) (view.Repository, error) {
	req := &structpb.Struct{Fields: map[string]*structpb.Value{opField: structpb.NewStringValue(opStatus)}}
	reply, err := n.Request(ctx, key, req)
	if err != nil {
		return view.Repository{}, err
	}
	var v view.Repository
	if err := json.Unmarshal([]byte(reply.Fields[viewField].GetStringValue()), &v); err != nil {
		return view.Repository{}, fmt.Errorf("cluster: status of %s from its owner %s: %w", key, n.Owner(key), err)
	}
	return v, nil
}
