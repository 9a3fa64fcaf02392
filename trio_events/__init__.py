"""trio_events: a Trio chat server whose heart is a real-time event stream."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config as Config
from .config import ConfigError as ConfigError
from .config import load_config as load_config
from .server import RunningServer as RunningServer
from .server import open_server as open_server
from .server import serve as serve

__all__ = [
    "Config",
    "ConfigError",
    "RunningServer",
    "__version__",
    "load_config",
    "open_server",
    "serve",
]
