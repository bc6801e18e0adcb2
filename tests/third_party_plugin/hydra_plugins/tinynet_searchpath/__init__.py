"""Hydra finds this module in the ``hydra_plugins`` namespace package and
appends tinynet's config groups to every app's search path."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class TinyNetSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="tinynet", path="pkg://tinynet.conf")
