"""THE SQL knowledge, on sqlglot, at the bottom of the import graph: it imports only sqlglot, the
stdlib, routesh.db.schema's types and routesh.errors. Import the module you need (routesh.sql.parse,
.extract, .usage, .hardness, .truncate, .split, .classify, .dialect, .guard); nothing is re-exported."""
