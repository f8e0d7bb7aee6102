package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Root is a binary's command: usage errors (bad flags, unknown commands)
// become UsageError, so Execute exits 2 on them.
func Root(use, short, long string, stdout, stderr io.Writer, cmds ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{Use: use, Short: short, Long: long, SilenceUsage: true, SilenceErrors: true}
	// Without Args, cobra reports an unknown command as a plain error.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return Usagef("unknown command %q", args[0])
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{Err: err} })
	root.AddCommand(cmds...)
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(root.FlagErrorFunc())
	}
	return root
}

// Execute runs root with args and returns the exit code: 0 success,
// 1 failure, 2 bad usage or configuration, or a command's ExitCode.
func Execute(ctx context.Context, root *cobra.Command, args []string, stderr io.Writer) int {
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", root.Name(), err)
	if _, ok := errors.AsType[UsageError](err); ok {
		// The help of the command that refused: outbox relay --help.
		path := root.Name()
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", path)
		return 2
	}
	if ec, ok := errors.AsType[ExitCode](err); ok {
		return int(ec)
	}
	return 1
}
