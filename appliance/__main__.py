"""``python -m appliance``: the same entry point as the ``appliance`` console script."""

import sys

from appliance.cli import main

sys.exit(main())
