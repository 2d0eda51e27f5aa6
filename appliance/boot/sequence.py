"""The boot sequence run as PID 1 of the initramfs: from kernel start to the real root.

Steps, each timed on the console (:mod:`appliance.boot.timeline`):

1. config   -- load the stored settings; offer the console prompt (countdown);
2. board    -- detect the board, ``modprobe`` the FEC's modules, check the PHY (the
               modules start loading in the background before the countdown, followed
               by the kernel's TLS, nbd and ext4: each off the step that needs it);
3. network  -- link up, carrier, DHCP or the static address; a DHCP lease gets its
               keeper ('@' process, :mod:`appliance.net.keeper`) renewing it from then on;
               a runtime .network in /run hands the interface over to the root's
               systemd-networkd without a flush (:mod:`appliance.boot.handover`);
4. server   -- wait until the NBD server answers over TLS-PSK (retrying with backoff:
               a wrong key or a server not started yet is reported, then retried); with
               one URI the data path serves from this connection: with ``nbd.path=ktls``
               (the default) a kTLS session, once the kernel's TLS modules (loading since
               the countdown) are in, else the relay's;
5. relay    -- fork the data path's root daemon ('@' argv[0], memory locked): the kTLS
               supervisor (:mod:`appliance.ktls`), which gives the session's socket to the
               kernel's nbd driver and reconnects it, or -- when the kernel cannot offload
               TLS, the URI is plaintext or lists replicas (the reason is printed) -- the
               relay (``appliance nbd attach``'s code, in a fork);
6. root     -- mount /dev/nbd0 on /newroot, move /dev /proc /sys /run into it;
7. switch   -- exec ``switch_root /newroot INIT``: the data path keeps serving.

The kernel command line may say ``nbdroot.config=PATH`` (the config store: a directory
or a raw area; default ``/etc/nbdroot``), ``nbdroot.device=/dev/nbdN`` and ``init=``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from appliance.backoff import Backoff
from appliance.boot import handover
from appliance.boot.timeline import Timeline
from appliance.config import BootConfig
from appliance.deadline import Deadline
from appliance.errors import ApplianceError, NBDError
from appliance.status import OVERLAY_LOWER

if TYPE_CHECKING:
    from appliance.background import Background
    from appliance.ktls.offload import BackgroundLoad
    from appliance.ktls.session import Session
    from appliance.ktls.supervisor import Opener
    from appliance.net.static import IPv4Config
    from appliance.relay import ReconnectPolicy
    from appliance.relay.upstream import Upstream
    from board.bringup import Modules
    from board.profile import Profile

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/nbdroot")
LOWER = Path(OVERLAY_LOWER)  # root.mode=overlay: the read-only export, below the overlay
NEWROOT = "/newroot"
DEVICE_WAIT_S = 30.0
SERVER_TIMEOUT_S = 10.0  # one negotiation of the server step
ROOT_MODULES = ("nbd", "ext4")  # the driver and the root's filesystem (modules in Debian's)


@dataclass(frozen=True)
class BootOptions:
    """What the kernel command line says about the boot."""

    config: Path = Path("/etc/nbdroot")
    device: str = "/dev/nbd0"
    init: str = "/sbin/init"
    log_level: str = "warning"  # appliance.log=: the agent's log on the console from this level

    @classmethod
    def from_cmdline(cls, text: str) -> BootOptions:
        """Parse ``nbdroot.config=``, ``nbdroot.device=``, ``init=`` and ``appliance.log=``
        from /proc/cmdline."""
        args = dict(a.split("=", 1) for a in text.split() if "=" in a)
        return cls(config=Path(args.get("nbdroot.config", str(cls.config))),
                   device=args.get("nbdroot.device", cls.device),
                   init=args.get("init", cls.init),
                   log_level=args.get("appliance.log", cls.log_level).lower())


def uri_with_psk_file(uri: str, path: Path) -> str:
    """``uri`` with ``tls-psk-file=path`` (replacing any given), for a key kept in config."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "tls-psk-file"]
    query.append(("tls-psk-file", str(path)))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def write_key(boot: BootConfig, directory: Path = RUN_DIR) -> str:
    """Write the configured PSK (mode 0600) and return the URI that names it (several
    replicas: each URI names it, space-separated as in nbd.uri)."""
    from appliance.config.psk import write_psk_file

    assert boot.nbd_uri is not None  # checked by BootConfig.from_config
    if boot.psk_key is None:
        return boot.nbd_uri
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "psk"
    write_psk_file(path, boot.psk_identity, boot.psk_key, overwrite=True)
    return " ".join(uri_with_psk_file(u, path) for u in boot.nbd_uri.split())


def test_connection(boot: BootConfig) -> str:
    """The console's ``test``: negotiate with the server once and say what it offers."""
    from appliance.client import export_info
    from appliance.transport import ConnectPolicy

    found = []
    uris = write_key(boot).split()
    for uri in uris:  # every replica (a failing one raises, naming its address)
        info = export_info(uri, policy=ConnectPolicy(timeout=5.0, attempts=1))
        found.append(f"export '{info.name}' {info.size} bytes"
                     f"{' read-only' if info.read_only else ''}")
    if len(uris) == 1:
        return f"ok: {found[0]}"
    return f"ok: {len(uris)} replicas: " + "; ".join(found)


class Found(NamedTuple):
    """What the server step found: the export, and the negotiated connection when asked
    to keep it, which the data path then serves from instead of negotiating once more:
    the relay's ``upstream``, or the kTLS path's first ``session``."""

    description: str
    upstream: Upstream | None = None
    session: Session | None = None


def wait_for_server(uri: str, boot: BootConfig, out: TextIO, *, keep: bool = False,
                    ktls: Opener | None = None) -> Found:
    """Negotiate until a server answers; report each new failure once, retry with backoff.

    ``uri``: one URI or several replicas, space-separated (each round tries them in
    order; the first that answers ends the wait).  Returns a one-line description of the
    export and, with ``keep`` (one URI), the connection negotiated as the relay does it
    (NBD_OPT_GO), or with ``ktls`` a kTLS session from that opener (should the kernel not
    take over the negotiated cipher, it says so and keeps the relay's connection instead);
    raises the last NBDError once ``retry.deadline`` (if any) has passed.
    """
    deadline, last = Deadline(boot.retry_deadline), ""
    backoff = Backoff(boot.retry_backoff_initial, boot.retry_backoff_max)
    probes = ([_ktls_probe(ktls, uri, out)] if ktls is not None else
              [_probe(one, keep) for one in uri.split()])
    attempt = 0
    while True:
        for probe in probes:
            try:
                return probe()
            except NBDError as exc:
                if deadline.expired:
                    raise
                if str(exc) != last:
                    print(f"nbdroot: {exc}; retrying", file=out, flush=True)
                    last = str(exc)
        time.sleep(backoff.delay(attempt))
        attempt += 1


def _probe(uri: str, keep: bool) -> Callable[[], Found]:
    """One negotiation with ``uri`` per call: NBD_OPT_INFO, or with ``keep`` the relay's own
    connector (NBD_OPT_GO; its TLS context, key included, made once here)."""
    from appliance.client import export_info
    from appliance.nbd.uri import parse_uri
    from appliance.relay.upstream import uri_connector
    from appliance.transport import ConnectPolicy

    if keep:
        connect = uri_connector(parse_uri(uri), timeout=SERVER_TIMEOUT_S)

        def negotiated() -> Found:
            up = connect()
            return Found(_describe(up.info.name, up.info.size), up)
        return negotiated
    policy = ConnectPolicy(timeout=SERVER_TIMEOUT_S, attempts=1)

    def info() -> Found:
        got = export_info(uri, policy=policy)
        return Found(_describe(got.name, got.size))
    return info


def _ktls_probe(opener: Opener, uri: str, out: TextIO) -> Callable[[], Found]:
    """One kTLS session per call; once the kernel refuses to offload the negotiated
    cipher, the relay's probe (said once, as the other fallbacks are)."""
    from appliance.errors import KtlsUnavailable

    relay: list[Callable[[], Found]] = []

    def probe() -> Found:
        if relay:
            return relay[0]()
        try:
            session = opener()
        except KtlsUnavailable as exc:
            _say_fallback(exc, out)
            relay.append(_probe(uri, keep=True))
            return relay[0]()
        return Found(_describe(session.info.name, session.info.size), session=session)
    return probe


def _describe(name: str, size: int) -> str:
    return f"{name or '(default)'}, {size} bytes"


def _say_fallback(why: Exception, out: TextIO) -> None:
    print(f"nbdroot: kTLS path unavailable: {why}; using the relay", file=out, flush=True)


def _policy(boot: BootConfig) -> ReconnectPolicy:
    """The data path's reconnect policy, from the ``retry.*`` settings."""
    from appliance.relay import ReconnectPolicy

    return ReconnectPolicy(initial=boot.retry_backoff_initial,
                           maximum=boot.retry_backoff_max, deadline=boot.retry_deadline)


def ktls_opener(uri: str, boot: BootConfig, out: TextIO,
                loading: BackgroundLoad | None = None) -> Opener | None:
    """With ``nbd.path=ktls``: the kTLS path's session opener (the kernel's TLS loaded,
    or ``loading`` waited for), or None for the relay, saying why (no ``tls`` in the
    kernel, a plaintext URI, replicas)."""
    from appliance.errors import KtlsUnavailable
    from appliance.ktls.supervisor import opener_for
    from appliance.nbd.uri import parse_uri

    if boot.nbd_path != "ktls":
        return None
    try:
        if len(uri.split()) > 1:
            raise KtlsUnavailable("nbd.uri lists replicas; failover between them is the "
                                  "relay's")
        return opener_for(parse_uri(uri), _policy(boot), loading)
    except KtlsUnavailable as exc:
        _say_fallback(exc, out)
        return None


def start_relay(uri: str, boot: BootConfig, device: str,
                first: Upstream | None = None) -> str:
    """Fork the relay ('@' argv[0], hardened) serving ``device``; returns once attached.

    A fork, not ``appliance nbd attach --detach``: the child inherits this process's
    loaded modules, saving a second Python start-up on the board.  ``first``: the server
    step's connection, which the relay serves from (this process closes its copy).
    """
    from appliance.daemon import fork_root_daemon, harden, lock_in_background
    from appliance.nbd.uri import parse_uri
    from appliance.relay.serve import AttachOptions, attach_and_serve

    policy = _policy(boot)

    def serve(ready: Callable[[str], None]) -> None:
        report = harden(lock_later=True)
        uris = [parse_uri(u) for u in uri.split()]  # several: replicas, tried in order
        att, relay = attach_and_serve(uris, policy, AttachOptions(device=device), first=first)
        print(f"{att.path}: attached ({relay.export.size} bytes, {att.method}); serving",
              file=sys.stderr, flush=True)
        ready(att.path)
        lock_in_background(report)  # the root mounts meanwhile
        relay.run()

    try:
        pid, line = fork_root_daemon(serve)
    finally:
        if first is not None:
            first.sock.close()  # the relay has its own descriptor
    return f"{line} (relay pid {pid})"


def start_ktls(session: Session, opener: Opener, boot: BootConfig, device: str) -> str:
    """Attach ``device`` to the kTLS ``session`` in a forked supervisor ('@', hardened),
    which reconnects with ``opener``.

    The supervisor child inherits the session and the TLS context (the PSK was read
    before switch_root removes its file) and does NBD_CMD_CONNECT itself, so the kernel
    records its PID for the device.
    """
    from appliance.daemon import KTLS_COMM, fork_root_daemon, harden, lock_in_background
    from appliance.ktls.supervisor import Supervisor, attach_session

    policy = _policy(boot)

    def serve(ready: Callable[[str], None]) -> None:
        report = harden(lock_later=True)
        att = attach_session(session, policy, device)
        supervisor = Supervisor(att.index, session, opener, policy)
        ready(f"{att.path}: attached ({session.info.size} bytes, "
              f"{session.offload.describe()}); supervising")
        lock_in_background(report)  # the root mounts meanwhile
        supervisor.run()

    try:
        pid, line = fork_root_daemon(serve, comm=KTLS_COMM)
    finally:
        session.close()  # the supervisor has its own descriptor; the kernel its reference
    return f"{line} (supervisor pid {pid})"


def start_data_path(uri: str, boot: BootConfig, device: str, found: Found,
                    opener: Opener | None) -> str:
    """The root disk's data path, serving from the server step's connection: the kTLS
    supervisor when that step kept a kTLS session, else the relay."""
    if found.session is not None and opener is not None:
        return start_ktls(found.session, opener, boot, device)
    return start_relay(uri, boot, device, found.upstream)


def wait_for_device(device: str, timeout: float = DEVICE_WAIT_S) -> None:
    """Wait until the kernel reports a non-zero size for ``device``."""
    size = Path("/sys/block") / Path(device).name / "size"
    deadline = Deadline(timeout)
    while not deadline.expired:
        try:
            if int(size.read_text()) > 0:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise ApplianceError(f"{device} has no size after {timeout:.0f} s")


def mount_root(device: str, init: str, mode: str = "rw", overlay_size: str = "50%") -> None:
    """Mount ``device`` on /newroot and move the pseudo filesystems into it.

    ``mode="overlay"``: ``device`` read-only at /run/nbdroot/lower, a tmpfs of
    ``overlay_size`` at /run/nbdroot/rw, and an overlayfs of the two on /newroot; /run moves
    into the root with them, so ``appliance status`` finds the lower device there.
    """
    from appliance.boot.mounts import MS_NOATIME, mount, move

    os.makedirs(NEWROOT, exist_ok=True)
    if mode == "overlay":
        mount_overlay(device, overlay_size)
    else:
        mount(device, NEWROOT, "ext4", MS_NOATIME)
    if not os.access(NEWROOT + init, os.X_OK):
        raise ApplianceError(f"the root on {device} has no executable {init} "
                             "(wrong export, or give init= on the kernel command line)")
    for mnt in ("/dev", "/proc", "/sys", "/run"):
        os.makedirs(NEWROOT + mnt, exist_ok=True)
        move(mnt, NEWROOT + mnt)


def mount_overlay(device: str, size: str) -> None:
    """/newroot = overlayfs: ``device`` read-only below, a tmpfs of ``size`` above."""
    from appliance.boot.mounts import MS_NOATIME, MS_RDONLY, mount

    lower, rw = str(LOWER), str(RUN_DIR / "rw")
    os.makedirs(lower, exist_ok=True)
    os.makedirs(rw, exist_ok=True)
    mount(device, lower, "ext4", MS_RDONLY | MS_NOATIME)
    mount("tmpfs", rw, "tmpfs", data=f"size={size},mode=0755")
    os.makedirs(rw + "/upper", exist_ok=True)
    os.makedirs(rw + "/work", exist_ok=True)
    mount("overlay", NEWROOT, "overlay",
          data=f"lowerdir={lower},upperdir={rw}/upper,workdir={rw}/work")


def network_config(boot: BootConfig) -> IPv4Config | None:
    """The static IPv4 configuration, or None for DHCP."""
    if boot.net_mode == "dhcp":
        return None
    import ipaddress

    from appliance.net.static import IPv4Config

    if not isinstance(boot.net_address, ipaddress.IPv4Interface):
        raise ApplianceError("net.address must be an IPv4 address with a prefix")
    gateway = boot.net_gateway if isinstance(boot.net_gateway, ipaddress.IPv4Address) else None
    dns = tuple(a for a in boot.net_dns or () if isinstance(a, ipaddress.IPv4Address))
    return IPv4Config(address=boot.net_address, gateway=gateway, dns=dns)


def run(opts: BootOptions, out: TextIO = sys.stdout) -> str:
    """Bring the board from the initramfs to a mounted root; returns the init to exec."""
    from appliance.background import finish
    from appliance.boot.clock import advance_to_build_time
    from appliance.config import open_store
    from appliance.console.prompt import configure_at_boot

    advance_to_build_time()
    tl = Timeline(out=out)
    early: list[BoardModules] = []  # started before the countdown, from the stored config
    ktls: list[BackgroundLoad] = []  # then the kTLS modules, after the board's
    storage: list[Background[object]] = []  # then nbd and the root's filesystem

    def start_early(stored: BootConfig) -> None:
        early.extend(_board_modules(stored))
        board = early[0].job if early else None
        if (load := _ktls_modules(stored, after=board)) is not None:
            ktls.append(load)
        storage.append(_root_modules(stored, after=ktls[0] if ktls else board))

    try:
        with tl.step("config") as step:
            boot = configure_at_boot(open_store(opts.config), tester=test_connection,
                                     early=start_early,
                                     before_prompt=lambda: _settle(early, [*ktls, *storage],
                                                                   out))
            step.detail = boot.nbd_uri or ""
        loading = ktls[0] if ktls else _ktls_modules(boot)
        _bring_up(tl, boot, early[0] if early else None)
        uri = write_key(boot)
        with tl.step("server") as step:
            # the data path serves from this connection (a replica set compares its
            # replicas first)
            opener = ktls_opener(uri, boot, out, loading)
            found = wait_for_server(uri, boot, out, keep=len(uri.split()) == 1, ktls=opener)
            step.detail = found.description
            if loading is not None and loading.seconds is not None:
                step.detail += f"; kTLS modules loaded in {loading.seconds:.1f} s"
        with tl.step("relay") as step:
            finish(storage)  # nbd, if it is still loading
            step.detail = start_data_path(uri, boot, opts.device, found, opener)
            wait_for_device(opts.device)
        with tl.step("root") as step:
            mount_root(opts.device, opts.init, boot.root_mode, boot.root_overlay_size)
            step.detail = (f"{opts.device} on /" if boot.root_mode == "rw" else
                           f"overlay on / ({opts.device} read-only, "
                           f"RAM {boot.root_overlay_size})")
    finally:
        _save(tl)
    return opts.init


def _ktls_modules(boot: BootConfig, after: Background[Modules] | None = None,
                  ) -> BackgroundLoad | None:
    """With nbd.path=ktls and one nbds:// URI: start loading the kernel's TLS now (once
    ``after`` is done), beside the countdown and the bring-up."""
    from appliance.nbd.uri import parse_uri

    uris = (boot.nbd_uri or "").split()
    try:
        if boot.nbd_path != "ktls" or len(uris) != 1 or not parse_uri(uris[0]).tls:
            return None
    except ApplianceError:
        return None  # a bad URI: the server step says what is wrong with it
    from appliance.ktls.offload import BackgroundLoad

    return BackgroundLoad(after=after)


@dataclass(frozen=True)
class BoardModules:
    """The board's modules loading in the background (:func:`board.bringup.load_modules`)."""

    profile: Profile
    job: Background[Modules]


def _profile(boot: BootConfig) -> Profile:
    from board.profile import detect, get_profile

    return get_profile(boot.board_profile) if boot.board_profile else detect(Path("/"))


def _board_modules(boot: BootConfig) -> list[BoardModules]:
    """Start loading the board's modules (none when its profile is unknown: the board step
    then says why)."""
    from appliance.background import Background
    from board.bringup import load_modules
    from board.modules import ModuleLoader

    try:
        profile = _profile(boot)
    except ApplianceError:
        return []
    job = Background("board-modules", lambda: load_modules(profile, ModuleLoader()))
    return [BoardModules(profile, job)]


def _root_modules(boot: BootConfig, after: Background[object] | None = None,
                  ) -> Background[object]:
    """Start loading the nbd driver and the root's filesystem (``overlay`` too with
    root.mode=overlay) once ``after`` is done, so that neither the relay step's ``modprobe
    nbd`` nor the mount's own module load waits for them.  Best effort: those steps load
    what is still missing, and report what fails."""
    from appliance.background import Background
    from appliance.modprobe import load

    names = ROOT_MODULES + (("overlay",) if boot.root_mode == "overlay" else ())
    return Background("root-modules", lambda: load(names), after=after)


def _settle(early: list[BoardModules], later: list[Background[object]], out: TextIO) -> None:
    """Before the prompt opens: let the modules started early finish loading (an error is
    the board step's, the server step's or the relay step's to report)."""
    from appliance.background import finish

    jobs: list[Background[object]] = [*(b.job for b in early), *later]
    if jobs:
        print("nbdroot: loading the board's modules first ...", file=out, flush=True)
    finish(jobs)


def _bring_up(tl: Timeline, boot: BootConfig, early: BoardModules | None) -> None:
    from appliance.net.up import bring_up as net_up
    from board.bringup import bring_up as board_up
    from board.profile import PhyAddr

    with tl.step("board") as step:
        profile = _profile(boot)
        loaded = early.job.wait() if early and early.profile == profile else None
        phy: PhyAddr = "auto" if boot.board_phy is None else boot.board_phy
        found = board_up(iface=boot.net_interface, phy=phy, profile=profile, loaded=loaded)
        step.detail = f"{found.profile.name}, PHY {found.selection.phy.describe()}"
        if found.restart_failed:
            step.detail += f"; NO REBOOT ({'; '.join(found.restart_failed)})"
    with tl.step("network") as step:
        result = net_up(boot.net_interface, network_config(boot))
        step.detail = f"{result.iface} {result.config.address}"
        kept = False
        if boot.net_mode == "dhcp":  # a static address has no lease to keep
            line, kept = _keep_lease(result.iface, result.config)
            step.detail += "; " + line
        _hand_over(result.iface, result.config,
                   mode="kept" if kept else "dhcp" if boot.net_mode == "dhcp" else "static")


def _keep_lease(iface: str, cfg: IPv4Config) -> tuple[str, bool]:
    """Start the lease keeper: (what to report, whether it runs).  A failure is reported;
    the root's networkd then renews the lease (see :func:`_hand_over`)."""
    from appliance.net.keeper import start

    began = time.monotonic()
    try:
        line = start(iface, cfg)[1]
        return f"{line}, started in {time.monotonic() - began:.1f} s", True
    except ApplianceError as exc:
        log.error("no lease keeper: %s", exc)
        return f"LEASE NOT KEPT ({exc})", False


def _hand_over(iface: str, cfg: IPv4Config, *, mode: handover.Mode) -> None:
    """The runtime .network that keeps the root's networkd off the root's interface."""
    try:
        handover.write(iface, cfg, mode=mode)
    except OSError as exc:
        log.warning("cannot write the network hand-over for the root (%s): %s", iface, exc)


def _save(tl: Timeline) -> None:
    """Write the timeline where ``appliance status`` reads it after switch_root: once the
    root step has moved /run into /newroot, the initramfs's own /run is an empty
    directory, and only /newroot/run/nbdroot is the /run the root will see."""
    moved = Path(NEWROOT) / RUN_DIR.relative_to("/")
    try:
        tl.save(str((moved if moved.is_dir() else RUN_DIR) / "timeline.json"))
    except OSError as exc:
        log.warning("cannot save the boot timeline: %s", exc)
