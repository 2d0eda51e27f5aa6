"""PID 1 must not seed ``random`` before the network step: seeding reads /dev/urandom,
which waits for the kernel's CRNG (~3 s under emulation) until the background reader that
/init starts has it ready (image/files/init, README "The boot image and the boot")."""

from __future__ import annotations

from tests.fresh_python import fresh_python

# What the boot imports up to the board step: appliance.boot's __main__, the config step
# (store, prompt, the early module loads) and the board step.
BEFORE_THE_NETWORK = """
import sys
from appliance.boot.lean import lean_pyroute2
lean_pyroute2()
import appliance.boot.pid1, appliance.boot.sequence, appliance.boot.clock
import appliance.config, appliance.config.psk, appliance.console.prompt
import appliance.background, appliance.ktls.offload, appliance.modprobe
import board.bringup, board.modules, board.profile
print(" ".join(m for m in ("random", "_random", "secrets", "tempfile") if m in sys.modules)
      or "none")
"""


def test_nothing_before_the_network_step_seeds_random() -> None:
    assert fresh_python(BEFORE_THE_NETWORK) == "none"


def test_the_check_sees_random_when_it_is_imported() -> None:
    """The reference: the network step's own imports do seed it (udhcpc's temp dir)."""
    code = BEFORE_THE_NETWORK.replace("import board.bringup",
                                      "import appliance.net.up\nimport board.bringup")
    assert "random" in fresh_python(code).split()
