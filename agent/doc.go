// Package agent will hold deployment manifests (native and Azure IoT Edge
// modulesContent), the reconciler, the Docker runtime backend, restart
// policies, manifest sources and reported state.
package agent
