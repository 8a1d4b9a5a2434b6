// Package models will hold the model store: verified downloads, versions,
// activation and rollback, quota.
package models
