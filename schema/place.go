package schema

import "fmt"

// Place says where pyramid's tables are: a database on one server, or a database on every
// server of a ClickHouse cluster. On a cluster each stored table T is T_local, a
// Replicated*MergeTree table on every server (replicated within its shard), and T is a
// Distributed table over it; every read and write goes through T, so the code that reads
// and writes rows is the same either way. Only the statements that work on parts and
// partitions need the stored table and every shard, which Place gives them.
type Place struct {
	Database string
	// Cluster is a cluster from the servers' remote_servers; empty on one server.
	Cluster string
}

// Place returns where cfg puts the tables.
func (c Config) Place() Place { return Place{Database: c.Database, Cluster: c.Cluster} }

// localSuffix names the stored table behind a Distributed one.
const localSuffix = "_local"

// Stored is the unqualified name of the table that holds table's rows on each server, as
// system.parts names it.
func (p Place) Stored(table string) string {
	if p.Cluster == "" {
		return table
	}
	return table + localSuffix
}

// Parts is the source of part statistics covering every shard once: system.parts on one
// server, and on a cluster the cluster() table function, which asks one replica per shard.
func (p Place) Parts() string {
	if p.Cluster == "" {
		return "system.parts"
	}
	return fmt.Sprintf("cluster('%s', system, parts)", p.Cluster)
}

// AlterStored is the head of an ALTER TABLE statement on table's stored table, on every
// server of the cluster if there is one. Replicated tables pass a partition drop on to
// their other replicas, and a replica that has dropped it already does nothing.
func (p Place) AlterStored(table string) string {
	q := "ALTER TABLE " + p.Database + "." + p.Stored(table)
	if p.Cluster != "" {
		q += " ON CLUSTER " + p.Cluster
	}
	return q
}
