// Package route implements the Azure IoT Edge route language for ledge's hub:
// parsing "FROM <source> [WHERE <condition>] INTO <sink>" routes with their
// case rules and error positions, evaluating conditions (properties, system
// properties, $body JSON queries, operators and built-in functions) against a
// Message, and a Table that turns a message into one Delivery per sink with
// the route priority and TTL that apply.
//
// It owns the grammar only: queues, endpoints and delivery belong to the hub,
// which builds a Table with NewTable on every configuration change and swaps
// it whole (an atomic.Pointer[Table]); a route that does not parse fails the
// whole change with a *ParseError naming the route and the byte offset.
//
// Concurrency: a Route, Condition or Table is immutable once built and safe
// for concurrent use; Match and Eval do not retain the Message. Values are
// plain data.
//
// docs/routes.md describes the language, with what differs from edgeHub.
package route
