"""Network configuration: parsing, resolv.conf, and real pyroute2 in network namespaces."""
