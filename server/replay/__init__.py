"""Tools that read the whole event log: verify, rebuild, time travel, export and import."""
