// Package scyllaemu emulates ScyllaDB's CDC on Apache Cassandra, for
// tests only: no ScyllaDB can be installed on the project's machines, and
// the ScyllaDB store's CDC path (scylla-cdc-go over the scylla gocql
// driver) must still run for real.
//
// Cassandra keeps the real parts: CQL storage, LOGGED BATCH and its
// batchlog. The emulation adds what Cassandra lacks:
//
//   - the CDC log: a Cassandra trigger (scripts/cassandra/trigger) adds
//     to every write of a CDC table the rows of <table>_scylla_cdc_log,
//     in ScyllaDB's layout, applied atomically with the write;
//   - CDC generations and streams, the tablets check and the table's cdc
//     options, in the keyspace named by Keyspace;
//   - a CQL proxy (Proxy) that shows those tables to clients as
//     ScyllaDB's system tables, strips BYPASS CACHE, and completes
//     CREATE TABLE ... WITH cdc = {...} (log table, trigger, options),
//     DROP TABLE and ALTER TABLE as ScyllaDB would.
//
// It is no ScyllaDB: streams are assigned by an emulated generation, not
// by the cluster's token ownership; a generation changes only when a test
// publishes one (NewGeneration); there are no pre- or post-images and no
// range deletions. DESIGN.md lists where ScyllaDB may behave differently.
// Production code never imports it (a test in this package checks
// cmd/outbox).
package scyllaemu
