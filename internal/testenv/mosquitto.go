package testenv

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Sub is a running mosquitto_sub.
type Sub struct {
	Cmd   *exec.Cmd
	lines chan string // its output, debug lines left out
	done  chan struct{}
}

// MosquittoSub starts mosquitto_sub with args (-d is added) under ctx and
// returns once the broker acknowledged its subscriptions (it printed the
// SUBACK): a message published after that reaches it. It fails the test
// when mosquitto_sub exits or says nothing of a SUBACK within 10 s.
func MosquittoSub(t testing.TB, ctx context.Context, args ...string) *Sub {
	t.Helper()
	bin := Command(t, "mosquitto_sub", "mosquitto-clients")
	// Its debug lines are buffered on a pipe: stdbuf makes them lines.
	stdbuf := Command(t, "stdbuf", "coreutils")
	s := &Sub{Cmd: exec.CommandContext(ctx, stdbuf, append([]string{"-oL", bin, "-d"}, args...)...),
		lines: make(chan string, 1000), done: make(chan struct{})}
	out, err := s.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	s.Cmd.Stderr = &stderr
	if err := s.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	subacked := make(chan struct{})
	go func() {
		defer close(s.done)
		defer close(s.lines)
		sc := bufio.NewScanner(out)
		acked := false
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "Client ") && strings.Contains(l, "received SUBACK"):
				if !acked {
					acked = true
					close(subacked)
				}
			case strings.HasPrefix(l, "Client ") || strings.HasPrefix(l, "Subscribed (mid"):
			default:
				s.lines <- l
			}
		}
	}()
	select {
	case <-subacked:
		return s
	case <-s.done:
		s.Cmd.Wait()
		t.Fatalf("mosquitto_sub %v exited before its subscription was acknowledged: %s", args, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto_sub %v: no SUBACK within 10 s: %s", args, stderr.String())
	}
	return nil
}

// Next returns the next line mosquitto_sub printed (a message, with -v
// its topic first), or false when it ended or printed none within timeout.
func (s *Sub) Next(timeout time.Duration) (string, bool) {
	select {
	case l, ok := <-s.lines:
		return l, ok
	case <-time.After(timeout):
		return "", false
	}
}

// Wait waits for mosquitto_sub to exit (with -C, after its messages).
func (s *Sub) Wait() error {
	<-s.done
	return s.Cmd.Wait()
}
