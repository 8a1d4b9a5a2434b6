// Package agent keeps the appliance in the state its deployment manifest
// asks for, like Azure IoT Edge's edgeAgent, and fixes what its users
// fight most: modules start after an offline reboot (the persisted
// deployment is applied at boot, and containers stopped by a reboot or an
// engine restart are started whatever their policy), "always" means
// always (no restart cap unless configured), a slow image pull is never
// cut while bytes arrive, and a deployment that does not converge rolls
// back to the last good one.
//
// What it owns:
//   - manifests (sub-package manifest): native YAML/JSON and Azure
//     modulesContent, onto one model;
//   - deployments in SQLite (component "agent" of internal/migrate): every
//     manifest as received, its signature, its fate (applying, converged,
//     failed, rolled-back, superseded), the current and last good one;
//   - the reconciler on the Docker engine API: containers labelled
//     io.ledge.managed/instance/module/hash and named <prefix><module>;
//     a container whose desired-spec hash matches is adopted and left
//     alone, one that differs is recreated, one not in the deployment is
//     removed; pulls run in the background with credentials and progress;
//     modules start in startupOrder groups; restart policies with back-off
//     Unit*2^n up to Max; Docker events (die, start, health, destroy) drive
//     it, with a resync every minute;
//   - ed25519 signatures ([Sign], [Verify], [Envelope]) with
//     agent.trustedKeys (signing.go: with keys, remote manifests must
//     carry a version above a persisted high-water mark; without, ledge
//     warns that remote deployments are unsigned);
//   - the privilege policy ([Policy], privileges.go) on each module's
//     decoded Docker config: elevated settings are refused unless
//     agent.allowElevatedPermissions, binds outside
//     agent.allowedBindSources and <dataDir>/modules/<module> too;
//   - sources: the API ([Agent.Apply]), an HTTP(S) URL polled with
//     If-None-Match, a retained message on the upstream deployment
//     topic (through [Upstream]), and the parent's $edgeAgent, $edgeHub
//     and $ledge twins (through [Parent], parent.go); remote sources
//     apply only a newer version;
//   - the workload API (sub-package workload): a socket per module,
//     mounted at /var/run/iotedge, signing with the module's key through
//     [Options.Workload], so no key is in a module's environment;
//   - the reported state ([Reported], Azure §2 shape), persisted,
//     published upstream, and [Agent.Events] for the dashboard.
//
// # Seams
//
// The agent imports no other ledge component. appliance wires these
// through [Options]; each may be nil:
//
//   - [Identities] (hub): a module's hub identity and where the hub is.
//     The agent injects LEDGE_MQTT_URL/USERNAME/PASSWORD/CA_FILE,
//     LEDGE_MODULE_ID, LEDGE_DEVICE_ID, LEDGE_HUB_HOST, the IOTEDGE_*
//     variables of reference §5.1 (EdgeHubConnectionString only without
//     the workload API) and EdgeModuleCACertificateFile (the CA
//     bind-mounted read-only at /run/ledge/hub-ca.pem), and makes the
//     hub's hostname resolve to the
//     host: the gateway address of the module network (agent.network,
//     default "ledge", created if missing), 127.0.0.1 with host
//     networking, host-gateway otherwise. Without it, modules get only
//     LEDGE_MODULE_ID and LEDGE_DEVICE_ID.
//   - [Twins] (hub): each deployment's desired module twins. Without it,
//     a manifest with twins is refused.
//   - [Upstream] (hub bridge): the deployment topic
//     (agent.sources.mqtt.topic, default ledge/{device}/deployment) and the
//     reported state (…/deployment/reported, retained). Without it, no
//     MQTT source.
//   - [Parent] (hub's link to an Azure parent): the parent's $edgeAgent,
//     $edgeHub and $ledge twins as a source, and the reported state back
//     as $edgeAgent reported properties. Without it, no parent source.
//   - Workload ([workload.Keys], hub): what a module's workload socket
//     signs and serves. Without it, no socket, and a module's key is in
//     its environment (EdgeHubConnectionString).
//   - [Section] per manifest section: "routes" and "storeAndForward"
//     (hub), "pipelines" (pipeline engine), "models" (model store),
//     optionally [SectionReporter] for work that finishes in the
//     background. A manifest carrying a section nobody owns is refused.
//     Sections are validated before anything changes and applied in the
//     order of manifest.SectionNames (models, storeAndForward, routes,
//     pipelines), then twins, then containers.
//
// # Concurrency
//
// [Agent] methods are safe for concurrent use. Accepting and activating
// deployments is serialised by deployMu; Agent.mu guards the in-memory
// current deployment and section results. The reconciler owns all
// container state in one goroutine (its run loop): API calls reach it
// through setDesired (latest wins) and Resync, readers see an atomic
// snapshot. Pulls run in their own goroutines and report back on a
// channel; the engine watcher goroutine feeds Docker events in. Run
// returns when its context ends, after every goroutine it started has
// stopped; containers keep running.
//
// # Caveats
//
// A module's plain MQTT password is visible to whoever can `docker
// inspect` (its key is not, with the workload API); the Docker socket is
// root-only. A
// container name taken by something ledge does not manage fails that
// module (it is not removed). Docker's own restart policy is always "no":
// the agent restarts modules, so it must run for them to be restarted
// (and it is started at boot by systemd).
package agent
