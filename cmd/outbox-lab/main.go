// Command outbox-lab is the project's lab: the demo, the benchmark and the
// fault matrix. It is not the product: the tooling it links (fault
// injection, a proxy, test readers, the checker) stays out of the outbox
// binary that serves traffic, which the fault matrix runs as child
// processes.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/lab/bench"
	"github.com/outbox-dev/outbox/internal/lab/chaos"
	"github.com/outbox-dev/outbox/internal/lab/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := app.Root("outbox-lab", "The outbox lab: demo, benchmark and fault matrix",
		`outbox-lab runs the system on a demo workload with a verdict (demo), measures
it beside baselines taken in the same run (bench), and runs the fault matrix
R1-R16 against the outbox binary (chaos).`, stdout, stderr,
		demo.Command(stdout, stderr), bench.Command(stdout, stderr), chaos.Command(stdout, stderr))
	return app.Execute(ctx, root, args, stderr)
}
