"""The DTB patcher: point a FEC's PHY node at a given MDIO address, with pylibfdt.

For the FEC node (a path, or the alias ``ethernetN``) it finds the PHY node (the
target of ``phy-handle``, else the first ``ethernet-phy`` under the FEC's ``mdio``) and
sets ``reg = <N>``, renames the node ``ethernet-phy@<N in hex>`` and makes sure the FEC's
``phy-handle`` points at it (adding a ``phandle`` when the node had none).  It refuses
an address another PHY node on the same bus already has.  :func:`dts_diff` shows the
change as a unified diff of ``dtc -I dtb -O dts`` output.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field

import libfdt

from appliance.errors import BoardError
from appliance.run import run
from board.profile import MDIO_ADDR_MAX

log = logging.getLogger(__name__)

PHY_NODE = "ethernet-phy"
_QUIET = (libfdt.NOTFOUND,)
_ROOM = 4096  # bytes of slack while editing; packed away afterwards


@dataclass
class Patch:
    """The patched blob and what changed, one line per property/name."""

    dtb: bytes
    fec: str
    phy_before: str
    phy_after: str
    changes: list[str] = field(default_factory=list)


def _load(blob: bytes) -> libfdt.Fdt:
    try:
        fdt = libfdt.Fdt(bytearray(blob))
        fdt.resize(fdt.totalsize() + _ROOM)
    except libfdt.FdtException as exc:
        raise BoardError(f"not a valid DTB: {exc}") from exc
    return fdt


def _offset(fdt: libfdt.Fdt, path: str) -> int:
    off = fdt.path_offset(path, _QUIET)
    if off < 0:
        raise BoardError(f"the DTB has no node {path}")
    return int(off)


def _children(fdt: libfdt.Fdt, parent: int) -> list[int]:
    kids = []
    off = fdt.first_subnode(parent, _QUIET)
    while off >= 0:
        kids.append(off)
        off = fdt.next_subnode(off, _QUIET)
    return kids


def root_compatible(blob: bytes) -> list[str]:
    """The DTB's own root ``compatible`` list (which board it was built for)."""
    try:
        prop = libfdt.Fdt(blob).getprop(0, "compatible")
    except libfdt.FdtException as exc:
        raise BoardError(f"not a DTB with a root compatible: {exc}") from exc
    return [s.decode("ascii", "replace") for s in bytes(prop).split(b"\0") if s]


def resolve_fec(fdt: libfdt.Fdt, fec: str, index: int = 0) -> str:
    """The FEC's node path: ``fec`` itself, or the alias ``ethernet<index>`` when empty."""
    if fec:
        _offset(fdt, fec)
        return fec
    alias = fdt.get_alias(f"ethernet{index}")
    if not alias:
        raise BoardError(f"the DTB has no alias ethernet{index}: give the FEC node path")
    return str(alias)


def _u32(fdt: libfdt.Fdt, off: int, name: str) -> int | None:
    prop = fdt.getprop(off, name, _QUIET)
    if not isinstance(prop, libfdt.Property) or len(prop) != 4:
        return None
    return int(prop.as_uint32())


def find_phy(fdt: libfdt.Fdt, fec_path: str) -> str:
    """Path of the FEC's PHY node: ``phy-handle``'s target, else the first node in its mdio."""
    fec = _offset(fdt, fec_path)
    handle = _u32(fdt, fec, "phy-handle")
    if handle is not None:
        off = fdt.node_offset_by_phandle(handle, _QUIET)
        if off < 0:
            raise BoardError(f"{fec_path}: phy-handle <{handle:#x}> points at no node")
        return str(fdt.get_path(off))
    mdio = fdt.subnode_offset(fec, "mdio", _QUIET)
    if mdio >= 0:
        for kid in _children(fdt, mdio):
            if str(fdt.get_name(kid)).split("@")[0] == PHY_NODE:
                return str(fdt.get_path(kid))
    raise BoardError(f"{fec_path} has no phy-handle and no {PHY_NODE} node under mdio")


def _max_phandle(fdt: libfdt.Fdt) -> int:
    best, off, depth = 0, 0, 0
    while off >= 0 and depth >= 0:  # past the root's end: depth -1, offset still >= 0
        best = max(best, _u32(fdt, off, "phandle") or 0)
        off, depth = fdt.next_node(off, depth, _QUIET)
    return best


def _check_bus(fdt: libfdt.Fdt, phy_path: str, address: int) -> None:
    phy = _offset(fdt, phy_path)
    bus = fdt.parent_offset(phy)
    if _u32(fdt, bus, "#address-cells") != 1:
        raise BoardError(f"{fdt.get_path(bus)}: #address-cells is not 1; not an MDIO bus node")
    for kid in _children(fdt, bus):
        if kid == phy:
            continue
        name = str(fdt.get_name(kid))
        if _u32(fdt, kid, "reg") == address or name == f"{PHY_NODE}@{address:x}":
            raise BoardError(f"MDIO address {address} is already taken by {fdt.get_path(kid)}")


def set_phy_address(blob: bytes, address: int, fec: str = "", index: int = 0) -> Patch:
    """Return ``blob`` with the FEC's PHY node at MDIO ``address``."""
    if not 0 <= address <= MDIO_ADDR_MAX:
        raise BoardError(f"MDIO address {address} out of range 0-{MDIO_ADDR_MAX}")
    fdt = _load(blob)
    fec_path = resolve_fec(fdt, fec, index)
    phy_path = find_phy(fdt, fec_path)
    _check_bus(fdt, phy_path, address)
    changes: list[str] = []
    phandle = _u32(fdt, _offset(fdt, phy_path), "phandle")
    if phandle is None:
        phandle = _max_phandle(fdt) + 1
        fdt.setprop_u32(_offset(fdt, phy_path), "phandle", phandle)
        changes.append(f"{phy_path}: phandle = <{phandle:#x}> (new)")
    old_reg = _u32(fdt, _offset(fdt, phy_path), "reg")
    if old_reg != address:
        fdt.setprop_u32(_offset(fdt, phy_path), "reg", address)
        was = "absent" if old_reg is None else f"<{old_reg:#x}>"
        changes.append(f"{phy_path}: reg = <{address:#x}> (was {was})")
    new_name = f"{PHY_NODE}@{address:x}"
    parent = phy_path.rsplit("/", 1)[0]
    if phy_path.rsplit("/", 1)[1] != new_name:
        fdt.set_name(_offset(fdt, phy_path), new_name)
        changes.append(f"{phy_path}: renamed {new_name}")
    new_path = f"{parent}/{new_name}"
    if _u32(fdt, _offset(fdt, fec_path), "phy-handle") != phandle:
        fdt.setprop_u32(_offset(fdt, fec_path), "phy-handle", phandle)
        changes.append(f"{fec_path}: phy-handle = <{phandle:#x}>")
    fdt.pack()
    for line in changes:
        log.info("dtb: %s", line)
    return Patch(dtb=bytes(fdt.as_bytearray()), fec=fec_path, phy_before=phy_path,
                 phy_after=new_path, changes=changes)


def to_dts(blob: bytes) -> str:
    """``dtc -I dtb -O dts`` of ``blob``."""
    proc = run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-"], error=BoardError,
               what="cannot show a diff", input=blob, timeout=60, check=False)
    if proc.returncode != 0:
        raise BoardError(f"dtc failed: {proc.stderr.strip()}")
    return proc.stdout


def dts_diff(before: bytes, after: bytes, name: str = "dtb") -> str:
    """A unified diff of the two blobs' source form."""
    lines = difflib.unified_diff(to_dts(before).splitlines(keepends=True),
                                 to_dts(after).splitlines(keepends=True),
                                 fromfile=f"{name} (before)", tofile=f"{name} (after)", n=3)
    return "".join(lines)
