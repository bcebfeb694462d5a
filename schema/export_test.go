package schema

// MigrateTo applies the migrations up to and including a version, giving tests the schema
// an earlier release left behind.
var MigrateTo = migrateTo
