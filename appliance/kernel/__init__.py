"""Handing an NBD connection to the kernel's nbd driver.

The kernel's driver speaks only the simple NBD protocol, without TLS, over one
connected stream socket it is given.  This package owns getting that socket into
the driver and out again:

* :mod:`~appliance.kernel.netlink` -- the ``nbd`` generic-netlink family
  (NBD_CMD_CONNECT / DISCONNECT / RECONFIGURE / STATUS, the link-dead group);
* :mod:`~appliance.kernel.ioctl` -- the older ``/dev/nbdN`` ioctl interface, used
  when the netlink family is missing;
* :mod:`~appliance.kernel.devices` -- finding ``/dev/nbdN`` devices, which are
  free, loading the module;
* :mod:`~appliance.kernel.attach` -- the one entry point (:func:`attach`,
  :func:`detach`, :func:`status`) that picks between the two.

The relay (:mod:`appliance.relay`) owns the other end of the socket.
"""

from __future__ import annotations

from appliance.kernel.attach import Attachment, KernelExport, attach, detach, status

__all__ = ["Attachment", "KernelExport", "attach", "detach", "status"]
