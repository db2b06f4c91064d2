package actors

import (
	"context"
	"log/slog"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestProtoactorLogsGoToZap(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	start(t, Config{Syncer: &recorder{}, Logger: zap.New(core)})
	started := logs.FilterLoggerName("protoactor").FilterMessage("actor system started").All()
	if len(started) != 1 {
		t.Fatalf("protoactor's start message reached zap %d times, want once; zap saw %v", len(started), logs.All())
	}
	if e := started[0]; e.Level != zapcore.DebugLevel || e.ContextMap()["id"] == "" {
		t.Fatalf("entry = %+v, want debug level with the system id", e)
	}
}

func TestZapHandler(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := slog.New(newZapHandler(zap.New(core))).With("system", "s1").WithGroup("g")
	log.Info("quiet")                       // slog info is zap debug: filtered out
	log.Warn("loud", slog.Int("n", 3))      // kept, with the group prefix
	log.Error("failed", slog.Any("e", "x")) // kept
	if log.Handler().Enabled(context.Background(), slog.LevelInfo) {
		t.Fatal("slog info is enabled on a zap logger at info level, want it demoted to debug")
	}
	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("zap saw %d entries, want 2: %v", len(all), all)
	}
	if m := all[0].ContextMap(); all[0].Level != zapcore.WarnLevel || m["g.n"] != int64(3) || m["system"] != "s1" {
		t.Fatalf("warn entry = %+v %v, want warn with g.n=3 and system=s1", all[0].Entry, m)
	}
	if all[1].Level != zapcore.ErrorLevel {
		t.Fatalf("error entry level = %v", all[1].Level)
	}
}
