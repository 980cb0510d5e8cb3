"""Reading a `/metrics` answer the way Prometheus does: with the client library's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

#: Prometheus's text format, as the library writes it.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


class Scrape:
    """The samples of one scrape, by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in self.families.values()
            for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 if the scrape has none with exactly these labels (a counter
        not yet incremented has no sample)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def labelled(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample of `name`, by its labels."""
        return {labels: v for (n, labels), v in self.samples.items() if n == name}

    def type_of(self, family: str) -> str:
        return self.families[family].type
