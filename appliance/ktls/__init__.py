"""The in-kernel data path (``nbd.path=ktls``): the kernel's nbd driver on a kernel-TLS socket.

Python negotiates (TLS-PSK with ``ssl.OP_ENABLE_KTLS``, NBD_OPT_GO with simple replies,
which is all the driver speaks), checks that the kernel took over the record layer in both
directions, and hands the socket itself to the driver with NBD_CMD_CONNECT.  Every request
then stays in the kernel.  A small supervisor ('@', memory locked, like the relay) waits
for the driver's NBD_CMD_LINK_DEAD and hands it a freshly negotiated socket with
NBD_CMD_RECONFIGURE; its decisions are the sans-IO :mod:`appliance.ktls.core`.

* :mod:`appliance.ktls.offload` -- the kernel's TLS: modules, the ULP, offload checks;
* :mod:`appliance.ktls.session` -- one negotiated, offloaded connection;
* :mod:`appliance.ktls.core` -- the supervisor's states and decisions (no I/O);
* :mod:`appliance.ktls.supervisor` -- attaching, and the supervisor's event loop.
"""
