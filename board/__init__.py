"""Board support for i.MX6 boards: profiles (data), board detection, kernel modules,
the MDIO sysfs scan, PHY address policy and the DTB patcher.

Everything that reads sysfs, procfs or the devicetree takes one ``root`` path
(default ``/``), so tests can point the code at a tree of files.
"""
