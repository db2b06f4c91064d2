package actors

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapHandler is a slog.Handler writing to zap, so that protoactor, which
// logs through log/slog, lands in the controller's log and not in coloured
// lines on stderr.
type zapHandler struct {
	log    *zap.Logger
	prefix string // of attribute keys, from WithGroup
}

func newZapHandler(log *zap.Logger) zapHandler { return zapHandler{log: log} }

// NewSlogHandler returns the slog.Handler that writes protoactor's logs to
// log, for actor systems started outside this package (the cluster member).
func NewSlogHandler(log *zap.Logger) slog.Handler { return newZapHandler(log) }

// level maps slog levels to zap, one step quieter below Warn: protoactor
// logs every system start and dead letter at Info, which is debug detail for
// a controller that logs restarts itself.
func level(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	default:
		return zapcore.DebugLevel
	}
}

func (h zapHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(level(l))
}

func (h zapHandler) Handle(_ context.Context, r slog.Record) error {
	ce := h.log.Check(level(r.Level), r.Message)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, h.field(a))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(attrs))
	for i, a := range attrs {
		fields[i] = h.field(a)
	}
	return zapHandler{log: h.log.With(fields...), prefix: h.prefix}
}

func (h zapHandler) WithGroup(name string) slog.Handler {
	if name != "" {
		h.prefix += name + "."
	}
	return h
}

func (h zapHandler) field(a slog.Attr) zap.Field {
	return zap.Any(h.prefix+a.Key, a.Value.Resolve().Any())
}
