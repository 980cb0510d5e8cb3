"""Everything that talks to PostgreSQL: the event store, migrations, the embedded cluster."""
