package main

import (
	"fmt"
	"io"
	"slices"
)

// labCommands are in the lab binary, outbox-lab, not in the product.
var labCommands = []string{"demo", "bench", "chaos"}

// pointToLab tells someone who runs `outbox demo` (the README's first
// command, mistyped) where the command is, before cobra calls it
// unknown, and returns true when it did.
func pointToLab(args []string, stderr io.Writer) bool {
	if len(args) == 0 || !slices.Contains(labCommands, args[0]) {
		return false
	}
	fmt.Fprintf(stderr, `outbox: %[1]s is not a command of outbox: the demo, the benchmark and the fault matrix are in the lab binary, outbox-lab:
  go run ./cmd/outbox-lab %[1]s      (from the repository)
  bin/outbox-lab %[1]s               (after go build -o bin/ ./cmd/outbox ./cmd/outbox-lab)
Run 'go run ./cmd/outbox-lab %[1]s --help' for its flags.
`, args[0])
	return true
}
