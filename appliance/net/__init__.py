"""Network configuration on the board: link up, carrier wait, static or DHCP IPv4, DNS.

Netlink goes through pyroute2; the DHCP exchange is done by busybox ``udhcpc`` (see
:mod:`appliance.net.dhcp` for why), and the result is applied with pyroute2 like a
static configuration.  The MAC address the kernel took from the devicetree/OCOTP is
never changed.  Files (``/etc/resolv.conf``, ``/sys/class/net``) live under one
``root`` path so tests can point them elsewhere.
"""
