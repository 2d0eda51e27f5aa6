"""The agent's configuration: the settings table, the config value, PSKs and the store.

Boot-time use::

    store = open_store(Path("/boot"))          # or a raw area: open_store(Path("/dev/mmcblk0p1"))
    config = store.load()                      # ConfigError if the store is damaged
    boot = config.boot_config()                # typed, checked; ConfigError if incomplete
"""

from appliance.config.model import BootConfig, Config
from appliance.config.settings import SETTINGS, Setting
from appliance.config.store import ConfigStore, DirectoryMedium, RawMedium, open_store

__all__ = ["SETTINGS", "BootConfig", "Config", "ConfigStore", "DirectoryMedium", "RawMedium",
           "Setting", "open_store"]
