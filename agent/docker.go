package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
)

// Labels ledge puts on what it creates.
const (
	labelManaged  = "io.ledge.managed"  // "true"
	labelInstance = "io.ledge.instance" // which ledge (device id) owns it
	labelModule   = "io.ledge.module"   // the module name
	labelHash     = "io.ledge.hash"     // hash of the desired container spec
)

// engine is the part of the Docker engine API the agent uses. Safe for
// concurrent use.
type engine struct {
	cli      *client.Client
	instance string
}

func newEngine(host, instance string) (*engine, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &engine{cli: cli, instance: instance}, nil
}

func (e *engine) Close() error { return e.cli.Close() }

// container is what the agent knows of one of its containers.
type containerInfo struct {
	ID         string
	Name       string // without the leading '/'
	Module     string
	Hash       string
	Image      string // as configured
	ImageID    string
	Running    bool
	Status     string // created, running, exited, ...
	ExitCode   int
	StartedAt  time.Time
	FinishedAt time.Time
	Health     string // "", starting, healthy, unhealthy
	OOMKilled  bool
}

func (e *engine) ping(ctx context.Context) error {
	_, err := e.cli.Ping(ctx)
	return err
}

// list returns this instance's containers, inspected.
func (e *engine) list(ctx context.Context) ([]containerInfo, error) {
	f := filters.NewArgs(filters.Arg("label", labelInstance+"="+e.instance), filters.Arg("label", labelManaged+"=true"))
	sums, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]containerInfo, 0, len(sums))
	for _, s := range sums {
		ci, err := e.inspect(ctx, s.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ci)
	}
	return out, nil
}

func (e *engine) inspect(ctx context.Context, id string) (containerInfo, error) {
	in, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		return containerInfo{}, fmt.Errorf("inspect container %.12s: %w", id, err)
	}
	ci := containerInfo{ID: in.ID, Name: strings.TrimPrefix(in.Name, "/"), ImageID: in.Image}
	if in.Config != nil {
		ci.Module, ci.Hash, ci.Image = in.Config.Labels[labelModule], in.Config.Labels[labelHash], in.Config.Image
	}
	if st := in.State; st != nil {
		ci.Running, ci.Status, ci.ExitCode, ci.OOMKilled = st.Running, string(st.Status), st.ExitCode, st.OOMKilled
		ci.StartedAt, ci.FinishedAt = dockerTime(st.StartedAt), dockerTime(st.FinishedAt)
		if st.Health != nil {
			ci.Health = string(st.Health.Status)
		}
	}
	return ci, nil
}

// dockerTime parses Docker's times; its zero time is "0001-01-01T00:00:00Z".
func dockerTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 2000 {
		return time.Time{}
	}
	return t
}

// imageID returns the local image's id, or "" when it is not present.
func (e *engine) imageID(ctx context.Context, ref string) (string, error) {
	in, err := e.cli.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return in.ID, nil
}

// PullProgress is the state of one image pull, as events and the
// reported state show it.
type PullProgress struct {
	Image   string  `json:"image"`
	Current int64   `json:"current"` // bytes downloaded, all layers
	Total   int64   `json:"total"`   // bytes known so far
	Percent float64 `json:"percent"` // 0..100 of what is known
	Status  string  `json:"status"`  // last status line from the engine
}

// pull pulls ref with optional credentials, calling progress as bytes
// arrive, and fails when nothing arrives for stall.
func (e *engine) pull(ctx context.Context, ref string, auth *registry.AuthConfig, stall time.Duration, progress func(PullProgress)) error {
	var opts image.PullOptions
	if auth != nil {
		enc, err := registry.EncodeAuthConfig(*auth)
		if err != nil {
			return err
		}
		opts.RegistryAuth = enc
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rc, err := e.cli.ImagePull(ctx, ref, opts)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	// A watchdog cuts a pull that stalls; a slow pull that keeps receiving
	// is never cut (reference §7 #9).
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(stall)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-alive:
				t.Reset(stall)
			case <-t.C:
				cancel(fmt.Errorf("no data for %s", stall))
				return
			}
		}
	}()
	type layer struct{ cur, total int64 }
	layers := map[string]*layer{}
	dec := json.NewDecoder(rc)
	var last PullProgress
	for {
		var msg struct {
			Status         string `json:"status"`
			ID             string `json:"id"`
			ProgressDetail struct {
				Current int64 `json:"current"`
				Total   int64 `json:"total"`
			} `json:"progressDetail"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if c := context.Cause(ctx); c != nil {
				return fmt.Errorf("pull %s: %w", ref, c)
			}
			return fmt.Errorf("pull %s: %w", ref, err)
		}
		select {
		case alive <- struct{}{}:
		default:
		}
		if msg.Error != "" {
			return fmt.Errorf("pull %s: %s", ref, msg.Error)
		}
		if msg.ID != "" {
			l := layers[msg.ID]
			if l == nil {
				l = &layer{}
				layers[msg.ID] = l
			}
			switch msg.Status {
			case "Downloading":
				l.cur, l.total = msg.ProgressDetail.Current, msg.ProgressDetail.Total
			case "Download complete", "Pull complete", "Already exists":
				if l.total > 0 {
					l.cur = l.total
				}
			}
		}
		p := PullProgress{Image: ref, Status: msg.Status}
		for _, l := range layers {
			p.Current += l.cur
			p.Total += l.total
		}
		if p.Total > 0 {
			p.Percent = float64(p.Current) * 100 / float64(p.Total)
		}
		if p != last {
			last = p
			progress(p)
		}
	}
	if c := context.Cause(ctx); c != nil {
		return fmt.Errorf("pull %s: %w", ref, c)
	}
	return nil
}

// permanentPullError reports whether retrying a pull cannot help: the
// image or tag does not exist, or access is denied.
func permanentPullError(err error) bool {
	if err == nil {
		return false
	}
	if cerrdefs.IsNotFound(err) || cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) || cerrdefs.IsInvalidArgument(err) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"manifest unknown", "not found", "pull access denied", "unauthorized", "authentication required",
		"repository does not exist", "invalid reference format", "denied"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// ensureNetwork creates the bridge network name if missing and returns
// its gateway address (the host, as containers on it see it).
func (e *engine) ensureNetwork(ctx context.Context, name string) (string, error) {
	nw, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if cerrdefs.IsNotFound(err) {
		_, err = e.cli.NetworkCreate(ctx, name, network.CreateOptions{
			Driver: "bridge",
			Labels: map[string]string{labelManaged: "true", labelInstance: e.instance},
		})
		if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
			return "", fmt.Errorf("create network %s: %w", name, err)
		}
		nw, err = e.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("network %s: %w", name, err)
	}
	for _, c := range nw.IPAM.Config {
		if c.Gateway != "" {
			return c.Gateway, nil
		}
	}
	return "", nil
}

func (e *engine) create(ctx context.Context, s *containerSpec) (string, error) {
	resp, err := e.cli.ContainerCreate(ctx, s.Config, s.Host, s.Net, nil, s.Name)
	if cerrdefs.IsConflict(err) {
		// A container of that name that is not ours (or left half-made).
		return "", fmt.Errorf("create container %s: the name is taken by a container ledge does not manage: remove or rename it: %w", s.Name, err)
	}
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", s.Name, err)
	}
	return resp.ID, nil
}

func (e *engine) start(ctx context.Context, id string) error {
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %.12s: %w", id, err)
	}
	return nil
}

func (e *engine) stop(ctx context.Context, id string, timeout time.Duration) error {
	secs := int((timeout + time.Second - 1) / time.Second)
	err := e.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %.12s: %w", id, err)
	}
	return nil
}

func (e *engine) remove(ctx context.Context, id string) error {
	err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: false})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %.12s: %w", id, err)
	}
	return nil
}

// events streams this instance's container events until ctx ends or the
// stream breaks (the error channel then receives why).
func (e *engine) events(ctx context.Context) (<-chan events.Message, <-chan error) {
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", labelInstance+"="+e.instance))
	return e.cli.Events(ctx, events.ListOptions{Filters: f})
}

func (e *engine) version(ctx context.Context) (string, string, string) {
	v, err := e.cli.ServerVersion(ctx)
	if err != nil {
		return "", "", ""
	}
	return v.Version, v.Os, v.Arch
}
