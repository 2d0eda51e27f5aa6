"""nbdroot-imx6: the boot-time agent of a diskless i.MX6 board.

The NBD protocol core (``appliance.nbd``) is sans-IO and imports nothing else of
the package; transport, kernel attach, relay, network, config, console and the
boot sequence are modules around it, importing inward.
"""

__version__ = "0.1.0"
