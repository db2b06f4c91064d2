package actors

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// panicky is a root-spawned singleton, like the cache actor, that panics on
// any string.
type panicky struct{}

func (panicky) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(string); ok {
		panic(m)
	}
}

func TestSingletonPanicIsFatal(t *testing.T) {
	tests := []struct {
		name  string
		crash func(t *testing.T, s *System)
		want  []string // in the fatal error
	}{{
		name: "supervisor",
		crash: func(_ *testing.T, s *System) {
			s.crashOnRequest = true
			s.root.Send(s.supervisor, &crashSupervisor{})
		},
		want: []string{"actor supervisor panicked", "crashSupervisor", "crash requested by a test"},
	}, {
		name: "actor spawned at the root",
		crash: func(t *testing.T, s *System) {
			pid, err := s.Root().SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return panicky{} }), "cache")
			if err != nil {
				t.Fatal(err)
			}
			s.Root().Send(pid, "boom")
		},
		want: []string{"actor cache panicked", "boom"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fatal := make(chan error, 2)
			s := NewSystem(Config{Syncer: &recorder{}, Fatal: func(err error) { fatal <- err }})
			defer shutdown(s)
			s.Upsert(newRepo("ns", "a", 1, time.Hour))
			tt.crash(t, s)
			select {
			case err := <-fatal:
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("fatal error %q does not contain %q", err, w)
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Fatal was not called within 10s of the panic")
			}
			select {
			case err := <-fatal:
				t.Errorf("Fatal called twice; second: %v", err)
			default:
			}
		})
	}
}

func shutdown(s *System) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Shutdown(ctx)
}
