"""Board support: profiles, detection, modules, MDIO scan, PHY policy, DTB patching."""
