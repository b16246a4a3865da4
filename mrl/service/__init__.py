"""The HTTP search service (`mrl serve`): routes, metrics, query log and alias following over `mrl.search.Searcher`."""

from mrl.service.app import create_app

__all__ = ["create_app"]
