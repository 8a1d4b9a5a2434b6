//go:build ledge_killwindow

package hub

import (
	"os"
	"time"
)

// A ledge built with -tags ledge_killwindow (cmd/ledge's kill -9 tests
// build one) holds each persistent-session commit back by
// $LEDGE_HUB_COMMIT_DELAY, as the hub's own child process does: an ack
// sent before its commit is then followed by the test's kill -9 inside
// that window. Release builds have no such hook.
func init() {
	if d, err := time.ParseDuration(os.Getenv("LEDGE_HUB_COMMIT_DELAY")); err == nil {
		commitDelay = d
	}
}
