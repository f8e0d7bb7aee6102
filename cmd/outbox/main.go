// Command outbox runs the order service, the relay, an embedded Kafka
// broker and the tools around them. See `outbox --help`.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/outbox-dev/outbox/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if pointToLab(args, stderr) {
		return 2
	}
	return app.Execute(ctx, newRootCmd(stdout, stderr), args, stderr)
}
