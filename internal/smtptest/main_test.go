package smtptest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its servers and clients; any goroutine left behind is a
// leak in Close, which is the contract the other packages' tests rely on.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
