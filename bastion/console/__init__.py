"""The SQL console: line editing, result rendering and the SQL session runner."""
