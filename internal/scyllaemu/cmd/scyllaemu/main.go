// Command scyllaemu runs the ScyllaDB CDC emulation's CQL proxy in front
// of an Apache Cassandra node whose triggers_dir holds the CDC log trigger
// (scripts/services.sh starts both for the test suite). Test tooling only:
// it is no ScyllaDB, see internal/scyllaemu.
//
//	scyllaemu -upstream 127.0.0.1:9042 -listen 127.0.0.1:19042
//	scyllaemu -upstream 127.0.0.1:9042 -new-generation 2s   # publish a generation 2 s ahead, then exit
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outbox-dev/outbox/internal/scyllaemu"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address clients connect to")
	upstream := flag.String("upstream", "", "Cassandra node host:port (required)")
	vnodes := flag.Int("vnodes", scyllaemu.DefaultTopology.Vnodes, "vnodes of each new generation")
	shards := flag.Int("shards", scyllaemu.DefaultTopology.Shards, "shards per vnode of each new generation")
	newGen := flag.Duration("new-generation", 0, "publish a generation starting this far ahead, then exit")
	verbose := flag.Bool("v", false, "log rewrites and DDL completions")
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *listen, *upstream, scyllaemu.Topology{Vnodes: *vnodes, Shards: *shards}, *newGen); err != nil {
		log.Error("scyllaemu", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, listen, upstream string, topo scyllaemu.Topology, newGen time.Duration) error {
	p, err := scyllaemu.New(ctx, scyllaemu.Config{Listen: listen, Upstream: upstream, Topology: topo, Logger: log})
	if err != nil {
		return err
	}
	defer p.Close()
	if newGen > 0 {
		at := time.Now().Add(newGen)
		if err := scyllaemu.NewGeneration(ctx, p.Session(), at, topo); err != nil {
			return err
		}
		fmt.Println(at.UTC().Format(time.RFC3339Nano))
		return nil
	}
	fmt.Println(p.Addr()) // the caller waits for this line
	return p.Serve(ctx)
}
