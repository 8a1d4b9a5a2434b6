// Package store is the hub's store-and-forward queue on SQLite: one FIFO
// queue per endpoint (a module input, or $upstream) and priority, with a
// per-message expiry and a byte quota.
//
// Durability: [Store.Enqueue] calls its done function only after the
// records are committed, so the hub acknowledges a QoS 1 publish only once
// it would survive kill -9. Commits are grouped: one writer goroutine takes
// every pending insert and delete off its channel and commits them in one
// transaction, so many publishers share one fsync.
//
// Delivery: an endpoint's consumer calls [Store.Next] to take the oldest
// messages of the highest priority (lowest number), then [Store.Ack] (the
// records are deleted and their space reused at once) or [Store.Nack] (they
// go back to the head of their queue). Delivery is at least once: acks not
// yet committed when the process dies are delivered again.
//
// Limits: when the quota in bytes would be exceeded, the oldest message of
// the lowest priority still waiting (not in flight) is dropped, repeatedly,
// and counted; messages past their expiry are dropped when met and by a
// sweep every second, and counted.
//
// The index of every queued message (sequence, endpoint, priority, size,
// times) is kept in memory; bodies are cached in memory up to a bound and
// otherwise read back from the database when delivered.
//
// Concurrency: all methods are safe for concurrent use; one mutex guards
// the index. Run must be running for Enqueue and Ack to make progress.
package store
