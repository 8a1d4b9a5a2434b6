// Package models is ledge's model store: it downloads the models a
// deployment (or `ledge models pull`) names, verifies them, keeps their
// versions, and says which version of each name is active.
//
// What it owns:
//   - downloads over https:// (http:// only with models.allowHTTP) and
//     file:///, one transfer per digest, at most download.concurrency at
//     once; a transfer that breaks or stalls is retried with back-off and
//     resumed from its partial file with a Range request (If-Range keeps a
//     changed file from being stitched); redirects are limited and never
//     downgrade to http; the size is bounded (the manifest's size, and
//     models.maxModelBytes);
//   - verification: the file's sha256 must equal the manifest's digest;
//     with trusted keys (agent.trustedKeys, handed over as [TrustedKey]),
//     a signature over the digest must verify ([Signature]);
//   - the files, content-addressed under <dataDir>/models/blobs/<sha256>;
//     transfers write to models/partial/<sha256>, and a file becomes a
//     blob only once verified (synced, renamed, directory synced), so a
//     partial file is never seen as a model. Names and versions never
//     become file names;
//   - metadata in SQLite (component "models" of internal/migrate): per
//     version its digest, size, kind, labels, input size, source URL,
//     signer, state and times; per name the active version, the version
//     the deployment asks for, and whether the active one was chosen by
//     hand; the activation history, for rollback;
//   - retention: models.keep versions per name (the active and desired
//     ones always stay), the rest collected; models.quotaBytes bounds the
//     store, evicting the oldest versions nothing needs before a download
//     that would not fit fails.
//
// Activation: once the version a deployment asks for is ready, the store
// activates it in one transaction: its [Activator] (the pipeline engine,
// wired by appliance) prepares it, loading and warming it beside the
// version serving; the store records it as active; the prepared version
// is committed, and its users switch between two frames. A version that
// fails to load or warm is marked failed and the previous one stays
// active. [Store.Resolve] is what a pipeline's detect.model: NAME reads.
//
// Restart: Open puts interrupted transfers back in the queue; Run resumes
// them and activates what the deployment asks for; with no network, what
// the store holds stays active.
//
// Concurrency: Store methods are safe for concurrent use. The database is
// the truth; a snapshot of it behind an atomic pointer serves Resolve and
// Report without I/O. Downloads run in goroutines started by Run; activations,
// desired-state changes and collection are serialised by one mutex
// (actMu); Store.mu guards the in-memory transfer and activation maps.
// Run returns after every goroutine it started has stopped.
package models
