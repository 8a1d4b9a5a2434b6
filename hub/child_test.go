package hub

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// childMain runs a hub in a child process of the test binary (so a test
// can kill -9 it, and measure its CPU). LEDGE_HUB_CHILD holds the JSON of
// childSpec. It prints "ready <mqtt port>" on stdout once listening.
type childSpec struct {
	Dir    string
	Dev    bool
	Config Config
	// HTTP serves a stand-in for the dashboard on a free port: /healthz,
	// and MQTT over WebSocket at /$iothub/websocket, as web mounts it.
	HTTP bool
}

func childMain() int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv("LEDGE_HUB_CHILD")), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(spec.Dir, "ledge.db")+"?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv("LEDGE_HUB_INLINE_WRITES") == "0" {
		inlineClientWrites = false
	}
	if v := os.Getenv("LEDGE_HUB_NET_BUFFERS"); v != "" { // read,write in bytes (measuring)
		fmt.Sscanf(v, "%d,%d", &clientReadBuffer, &clientWriteBuffer)
	}
	if d, err := time.ParseDuration(os.Getenv("LEDGE_HUB_COMMIT_DELAY")); err == nil {
		commitDelay = d
	}
	h, err := New(ctx, Options{Config: spec.Config, DB: db, DataDir: spec.Dir, DeviceID: testDevice, Dev: spec.Dev, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child hub:", err)
		return 1
	}
	if path := os.Getenv("LEDGE_HUB_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if path := os.Getenv("LEDGE_HUB_MEMPROFILE"); path != "" { // allocations, written at exit
		defer func() {
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	httpPort := 0
	if spec.HTTP {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if err := h.Healthy(r.Context()); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		mux.Handle("/$iothub/websocket", h.WebSocketHandler())
		go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(l)
		httpPort = l.Addr().(*net.TCPAddr).Port
	}
	fmt.Printf("ready %d %d %d %d\n", h.Ports().MQTT, os.Getpid(), httpPort, h.Ports().MQTTS)
	if err := h.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child hub run:", err)
		return 1
	}
	return 0
}
