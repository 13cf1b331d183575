// Command latchkey is the credential-lifecycle service: `latchkey help` lists
// its subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/latchkey/latchkey/internal/cli"
)

// version, when stamped at build time with -ldflags "-X main.version=…",
// replaces the module version that the Go toolchain records (a build
// without VCS information, such as a container build without .git, has
// none).
var version string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, cli.OSEnv(version), os.Args[1:])
	stop()
	switch {
	case err == nil:
	case errors.Is(err, cli.ErrUsage):
		fmt.Fprintln(os.Stderr, "latchkey:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "latchkey:", err)
		os.Exit(1)
	}
}
