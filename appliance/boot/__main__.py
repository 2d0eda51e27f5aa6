"""``python3 -m appliance.boot``: what the initramfs's /init execs as PID 1.

The lean way in: no argument parser and no command registry (``appliance boot`` runs the
same :func:`appliance.boot.pid1.main` through the full command line), and pyroute2
without its package ``__init__`` and mock lab (:mod:`appliance.boot.lean`), modules found
through an index made at build time (:mod:`appliance.boot.module_index`), the code that
dataclasses, namedtuples and regular expressions compile at import compiled at build
time (:mod:`appliance.boot.precompiled`), and ``inspect`` only if something needs it
(:mod:`appliance.boot.lazy_inspect`).
"""

import os
import sys

from appliance.boot import module_index

module_index.install()  # first: the imports below are found through it

from appliance.boot import lazy_inspect, precompiled  # noqa: E402
from appliance.boot.lean import lean_pyroute2  # noqa: E402

for name in ("PYTHONHASHSEED", "PYTHONPATH"):  # /init's, for this process only (image/files/init)
    os.environ.pop(name, None)

lazy_inspect.install()  # before dataclasses imports it
precompiled.install()  # before the first dataclass: code compiled at build time
lean_pyroute2()

from appliance.boot.pid1 import main  # noqa: E402 - after pyroute2's init is skipped

sys.exit(main())
