"""Tools that read the whole event log: verify, rebuild, time travel, export and import."""

from pathlib import Path

from ..store.queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("replay.sql"))
