// Package manifest reads deployment manifests into the one internal model
// the agent reconciles ([Manifest]): ledge's native format in YAML or JSON,
// and Azure IoT Edge modulesContent manifests ($edgeAgent modules with
// chunked createOptions, env value objects, restart and pull policies,
// startup order and registry credentials; $edgeHub routes and
// store-and-forward; per-module desired twins; ledge's own $ledge twin for
// version, models and pipelines).
//
// JSON may carry // and /* */ comments and trailing commas, as Microsoft's
// tooling accepts them: a pre-pass ([StandardizeJSONC]) blanks them out
// without moving a byte, so every error keeps its line, column and byte
// offset in the text as written. JSON and YAML are read into the same
// yaml.Node tree and decoded strictly with internal/yamlstrict: unknown
// keys, duplicate keys, wrong types and bad values are [Error]s naming the
// field path and place. Schema versions ledge does not read are refused by
// name.
//
// The sections other components own (models, pipelines, and the route
// text) are checked here only for their shape and kept as canonical JSON
// in [Manifest.Sections]; the agent hands them to their owners.
//
// Everything here is pure and safe for concurrent use.
package manifest
