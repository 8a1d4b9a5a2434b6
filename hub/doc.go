// Package hub will hold ledge's embedded MQTT broker (mochi-mqtt) with
// identities and auth, ACL, the Azure IoT Hub device topic dialect, routes,
// twins, direct methods, store-and-forward and the upstream bridge.
package hub
