"""The host layer: tools that run on the server's machine, never on the board.

The demo (``appliance demo``), the real test servers (qemu-nbd, nbdkit, nbd-server
started by PID), benchmarks, the host end of the serial console and their command-line
front ends.  They may import the board layer (the rest of :mod:`appliance`, and
:mod:`board`) and the image builder (:mod:`image`); the board layer never imports them,
and the initramfs leaves this package out (``tests/test_layers.py`` checks both).
"""
