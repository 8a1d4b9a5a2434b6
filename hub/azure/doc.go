// Package azure is the Azure IoT Hub device dialect as ledge's hub speaks
// it (reference azure-iot-edge.md §4): shared access signature tokens
// (parse, verify over the raw sr text, build), the URL-encoded property
// bags appended to telemetry and hub->client topics, with the mapping of
// their $.-keys onto system property names, and the classification of the
// MQTT topics devices and modules use (telemetry, twin requests, method
// responses) and the topics the hub publishes to them.
//
// Everything here is a pure function of its input, safe for concurrent
// use, and every parser of outside input has a Fuzz test.
package azure
