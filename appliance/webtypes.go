package appliance

import (
	"encoding/json"
	"maps"

	"ledge/agent"
	"ledge/hub"
	"ledge/models"
	"ledge/pipeline"
	"ledge/pipeline/source"
	"ledge/web"
)

// The components' values as web's response types. Where web's type has
// the component's fields, name for name, it is a plain conversion, which
// stops compiling when either side changes; webtypes_test.go checks that
// every conversion keeps every field's JSON.

// each converts a slice element by element; nil stays nil.
func each[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// eachValue converts a map's values; nil stays nil.
func eachValue[K comparable, T, U any](in map[K]T, f func(T) U) map[K]U {
	if in == nil {
		return nil
	}
	out := make(map[K]U, len(in))
	for k, v := range in {
		out[k] = f(v)
	}
	return out
}

// rawJSON is v's JSON (of a value that always encodes: maps and values
// read from JSON).
func rawJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`null`)
	}
	return b
}

// Models.

func webModel(m models.Model) web.Model {
	return web.Model{Name: m.Name, Active: m.Active, ActivatedAt: m.ActivatedAt, Desired: m.Desired, Pinned: m.Pinned,
		Versions: each(m.Versions, webModelVersion)}
}

func webModelVersion(v models.Version) web.ModelVersion {
	out := web.ModelVersion{Name: v.Name, Version: v.Version, Digest: v.Digest, Size: v.Size, Kind: v.Kind, Labels: v.Labels,
		InputWidth: v.InputWidth, InputHeight: v.InputHeight, URL: v.URL, Signer: v.Signer, State: string(v.State), Error: v.Error,
		CreatedAt: v.CreatedAt, ReadyAt: v.ReadyAt, ActivatedAt: v.ActivatedAt, Path: v.Path}
	if v.Progress != nil {
		p := web.ModelProgress(*v.Progress)
		out.Progress = &p
	}
	return out
}

// Pipelines.

func webPipelineStats(s pipeline.Stats) web.PipelineStats {
	return web.PipelineStats{Name: s.Name, Running: s.Running, State: s.State, Reason: s.Reason, FailingSince: s.FailingSince,
		Source: webSourceState(s.Source), Model: s.Model, ModelVersion: s.ModelVersion,
		FramesIn: s.FramesIn, FramesOut: s.FramesOut, Dropped: s.Dropped, SkippedMotion: s.SkippedMotion, SkippedRate: s.SkippedRate,
		Detections: s.Detections, DetectErrors: s.DetectErrors, Events: s.Events, EventsDropped: s.EventsDropped,
		Encodes: s.Encodes, SnapshotEncodes: s.SnapshotEncodes, Watchers: s.Watchers, FPSIn: s.FPSIn, FPSOut: s.FPSOut,
		Latency: eachValue(s.Latency, func(l pipeline.Latency) web.StageLatency { return web.StageLatency(l) }),
		Actions: each(s.Actions, func(a pipeline.ActionStats) web.ActionStats { return web.ActionStats(a) })}
}

func webSourceState(s source.State) web.SourceState {
	return web.SourceState{Phase: string(s.Phase), Since: s.Since, Reason: s.Reason, Retry: s.Retry, Failures: s.Failures, Reconnects: s.Reconnects}
}

func webEvent(e pipeline.Event) web.PipelineEvent {
	out := web.PipelineEvent{ID: e.ID, Type: e.Type, Pipeline: e.Pipeline, Time: e.Time, Frame: e.Frame, Zone: e.Zone, Class: e.Class,
		TrackID: e.TrackID, Score: e.Score, Box: web.Box(e.Box), Width: e.Width, Height: e.Height, Count: e.Count, Previous: e.Previous,
		Dwell: e.Dwell, Snapshot: e.Snapshot, EventID: e.EventID, Start: e.Start, End: e.End, Zones: e.Zones, Model: e.Model,
		Captured: e.Captured}
	if e.Source != nil {
		s := webSourceState(*e.Source)
		out.Source = &s
	}
	return out
}

// Deployments.

func webPlan(p agent.Plan) web.DeploymentPlan {
	return web.DeploymentPlan{Version: p.Version, Format: p.Format, Digest: p.Digest, Signer: p.Signer, Current: p.Current,
		Warnings: p.Warnings, Notes: p.Notes, Offline: p.Offline, Changes: each(p.Changes, func(c agent.Change) web.PlanChange {
			return web.PlanChange{Kind: c.Kind, Name: c.Name, Action: string(c.Action), Detail: c.Detail}
		}),
		Elevated: each(p.Elevated, func(e agent.Elevation) web.Elevation { return web.Elevation(e) })}
}

func webDeployment(d agent.Deployment) web.Deployment {
	return web.Deployment{ID: d.ID, Version: d.Version, Digest: d.Digest, Source: d.Source, Format: d.Format, Signer: d.Signer,
		ReceivedAt: d.ReceivedAt, State: d.State, Reason: d.Reason, ConvergedAt: d.ConvergedAt, Good: d.Good, PrevID: d.PrevID}
}

func webReport(r agent.Reported) web.AgentReport {
	out := web.AgentReport{SchemaVersion: r.SchemaVersion, Version: web.AgentVersion(r.Version), LastDesiredVersion: r.LastDesiredVersion,
		LastDesiredStatus: web.DesiredStatus(r.LastDesiredStatus),
		Runtime: web.AgentRuntime{Type: r.Runtime.Type, Platform: web.RuntimePlatform(r.Runtime.Platform),
			Settings: web.RuntimeSettings{MinDockerVersion: r.Runtime.Settings.MinDockerVersion,
				RegistryCredentials: eachValue(r.Runtime.Settings.RegistryCredentials, func(v any) json.RawMessage { return rawJSON(v) })}},
		SystemModules: eachValue(r.SystemModules, webModule),
		Modules:       eachValue(r.Modules, webModule),
		Sections: eachValue(r.Sections, func(s agent.SectionReport) web.SectionReport {
			return web.SectionReport{State: s.State, Detail: s.Detail, Items: eachValue(s.Items, func(v any) json.RawMessage { return rawJSON(v) })}
		}),
		Engine: web.EngineReport(r.Engine)}
	if d := r.Deployment; d != nil {
		out.Deployment = &web.DeploymentReport{ID: d.ID, Version: d.Version, Digest: d.Digest, Source: d.Source, Format: d.Format,
			Signer: d.Signer, State: d.State, Reason: d.Reason, ReceivedAt: d.ReceivedAt, ConvergedAt: d.ConvergedAt,
			Unsigned: d.Unsigned}
		if b := d.RolledBackFrom; b != nil {
			rb := web.RollbackReport(*b)
			out.Deployment.RolledBackFrom = &rb
		}
	}
	if j := r.Rejected; j != nil {
		rj := web.Rejection(*j)
		out.Rejected = &rj
	}
	if g := r.Signing; g != nil {
		sg := web.SigningReport(*g)
		out.Signing = &sg
	}
	return out
}

func webModule(m agent.ModuleReport) web.ModuleReport {
	settings := map[string]string{"image": m.Settings.Image}
	if m.Settings.ImageHash != "" {
		settings["imageHash"] = m.Settings.ImageHash
	}
	maps.Copy(settings, m.Settings.CreateOptions)
	out := web.ModuleReport{Version: m.Version, Type: m.Type, Status: m.Status, RestartPolicy: m.RestartPolicy,
		ImagePullPolicy: m.ImagePullPolicy, StartupOrder: m.StartupOrder, Settings: settings, ExitCode: m.ExitCode,
		Env:               eachValue(m.Env, func(v agent.EnvValue) web.EnvValue { return web.EnvValue(v) }),
		StatusDescription: m.StatusDescription, LastStartTimeUtc: m.LastStartTimeUtc, LastExitTimeUtc: m.LastExitTimeUtc,
		RestartCount: m.RestartCount, LastRestartTimeUtc: m.LastRestartTimeUtc, RuntimeStatus: m.RuntimeStatus,
		ContainerID: m.ContainerID, Health: m.Health, NextRestartTimeUtc: m.NextRestartTimeUtc, Elevated: m.Elevated}
	if m.Pull != nil {
		p := web.PullProgress(*m.Pull)
		out.Pull = &p
	}
	return out
}

// Hub.

func webHubStats(s hub.Stats) web.HubStats {
	return web.HubStats{Hostname: s.Hostname, Ports: web.HubPorts(s.Ports), ClientsConnected: s.ClientsConnected,
		ConnectionsPending: s.ConnectionsPending, ConnectionsEvicted: s.ConnectionsEvicted,
		Clients:          each(s.Clients, func(c hub.ClientInfo) web.HubClient { return web.HubClient(c) }),
		MessagesReceived: s.MessagesReceived, MessagesSent: s.MessagesSent, Routed: s.Routed, Delivered: s.Delivered,
		C2D: s.C2D, Methods: s.Methods, AuthFailures: s.AuthFailures, Rates: web.HubRates(s.Rates), Drops: s.Drops,
		Queues: each(s.Queues, func(q hub.QueueStats) web.HubQueue {
			return web.HubQueue{Endpoint: q.Endpoint, Depth: q.Depth, Inflight: q.Inflight, Bytes: q.Bytes, OldestAge: q.OldestAge,
				Priorities: q.Priorities, Delivered: q.Delivered, Failures: q.Failures, Backoff: q.Backoff, LastError: q.LastError}
		}),
		QueueBytes: s.QueueBytes, QueueQuota: s.QueueQuota, Upstream: webUpstream(s.Upstream)}
}

func webUpstream(u hub.UpstreamStatus) web.HubUpstream {
	return web.HubUpstream{Mode: u.Mode, Broker: u.Broker, State: u.State, Since: u.Since, LastError: u.LastError,
		Relays: each(u.Relays, func(r hub.RelayStatus) web.HubRelay { return web.HubRelay(r) })}
}

// upstreamAPI gives web the upstream link's state, from the hub or from
// the link a hub-less appliance keeps (web.UpstreamStatus).
type upstreamAPI func() hub.UpstreamStatus

func (f upstreamAPI) Upstream() web.HubUpstream { return webUpstream(f()) }

func webIdentity(id hub.Identity) web.HubIdentity {
	return web.HubIdentity{Name: id.Name, Kind: id.Kind, Device: id.Device, Module: id.Module, PrimaryKey: id.PrimaryKey,
		SecondaryKey: id.SecondaryKey, X509Thumbprint: id.Thumbprint, X509CA: id.X509CA, Enabled: id.Enabled,
		ManagedBy: id.ManagedBy, Parent: id.Parent, Created: id.Created}
}

func webCreated(c hub.Created) web.HubCreated {
	return web.HubCreated{HubIdentity: webIdentity(c.Identity), Password: c.Password, ConnectionString: c.ConnectionString}
}

func webTwin(t hub.Twin) web.HubTwin {
	return web.HubTwin{Desired: rawJSON(t.Desired), DesiredVersion: t.DesiredVersion, Reported: rawJSON(t.Reported),
		ReportedVersion: t.ReportedVersion}
}
