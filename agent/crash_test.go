package agent

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperAgent is the ledge child process of TestKill9, run by TestMain
// when LEDGE_AGENT_HELPER_DB is set. It runs an agent on the database and
// instance the parent names, applies a manifest when asked (printing
// APPLIED once Apply has returned, i.e. acknowledged), prints "STATE
// <version> <state>" when the deployment changes and, after a state turns
// converged, "RESYNCED" once a full pass of the reconciler is done, until
// it is killed.
func helperAgent() int {
	fail := func(err error) int {
		fmt.Println("ERROR", err)
		return 1
	}
	db, err := sql.Open("sqlite3", "file:"+os.Getenv("LEDGE_AGENT_HELPER_DB")+"?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		return fail(err)
	}
	instance, prefix := os.Getenv("LEDGE_AGENT_HELPER_INSTANCE"), os.Getenv("LEDGE_AGENT_HELPER_PREFIX")
	cfg := testConfig()
	cfg.ContainerPrefix = prefix
	ctx := context.Background()
	a, err := New(ctx, Options{Config: cfg, DB: db, DeviceID: "dev-" + instance, Instance: instance, Logger: testLogger(nil)})
	if err != nil {
		return fail(err)
	}
	go a.Run(ctx)
	if f := os.Getenv("LEDGE_AGENT_HELPER_APPLY"); f != "" {
		data, err := os.ReadFile(f)
		if err == nil {
			_, err = a.Apply(ctx, data, nil)
		}
		if err != nil {
			return fail(err)
		}
		fmt.Println("APPLIED")
	}
	last := ""
	for {
		rep := a.Reported()
		if d := rep.Deployment; d != nil {
			line := fmt.Sprintf("STATE %s %s", d.Version, d.State)
			if line != last {
				fmt.Println(line)
				last = line
				if d.State == StateConverged {
					if err := a.Resync(ctx); err != nil {
						return fail(err)
					}
					fmt.Println("RESYNCED")
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// child is a running helper agent.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t *testing.T, dbPath, instance, prefix, apply string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LEDGE_AGENT_HELPER_DB="+dbPath, "LEDGE_AGENT_HELPER_INSTANCE="+instance,
		"LEDGE_AGENT_HELPER_PREFIX="+prefix, "LEDGE_AGENT_HELPER_APPLY="+apply)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

// expect waits for a line starting with prefix.
func (c *child) expect(t *testing.T, prefix string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited waiting for %q; it said %v", prefix, seen)
			}
			if strings.HasPrefix(l, "ERROR") {
				t.Fatalf("child: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
			seen = append(seen, l)
		case <-deadline:
			t.Fatalf("no %q from the child within %s; it said %v", prefix, timeout, seen)
		}
	}
}

func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	}
}

// TestKill9: a deployment acknowledged by a ledge that is killed with
// SIGKILL right after is applied by the next one; and killing a ledge
// whose modules run, then starting it again, restarts no container (same
// container ids, same start times).
func TestKill9(t *testing.T) {
	images(t)
	n := instanceSeq.Add(1)
	instance, prefix := fmt.Sprintf("lt-%s-%d", testRun, n), fmt.Sprintf("lt%s%d-", testRun, n)
	t.Cleanup(func() { removeInstances(context.Background(), docker(t), instance) })
	dir := t.TempDir()
	dbPath, file := filepath.Join(dir, "ledge.db"), filepath.Join(dir, "m.yaml")
	os.WriteFile(file, []byte(manifestYAML("5",
		"one "+imgApp+" always 0",
		"two "+imgApp+" on-failure 1",
		"three "+imgApp+" never 2")), 0o644)

	first := startChild(t, dbPath, instance, prefix, file)
	first.expect(t, "APPLIED", 30*time.Second)
	first.kill()

	second := startChild(t, dbPath, instance, prefix, "")
	second.expect(t, "STATE 5 converged", 30*time.Second)
	before := instanceContainers(t, instance)
	if len(before) != 3 {
		t.Fatalf("after the acknowledged apply and a kill -9: %d containers, want 3", len(before))
	}
	second.kill()

	third := startChild(t, dbPath, instance, prefix, "")
	third.expect(t, "STATE 5 converged", 30*time.Second)
	// A full pass of the reconciler after the boot: anything it might
	// wrongly do is done.
	third.expect(t, "RESYNCED", 30*time.Second)
	after := instanceContainers(t, instance)
	for name, b := range before {
		a := after[name]
		if a.ID != b.ID || !a.StartedAt.Equal(b.StartedAt) || !a.Running {
			t.Errorf("%s: before kill -9 %.12s started %s; after %.12s started %s running %v",
				name, b.ID, b.StartedAt.Format(time.StampMicro), a.ID, a.StartedAt.Format(time.StampMicro), a.Running)
		}
	}
}
