"""Real NBD servers on loopback: qemu-nbd and nbdkit, started and stopped by PID.

Used by the tests (through the fixtures in ``tests/conftest.py``: ``nbd_servers``,
``psk_file``, which stop every server even when a test fails; ``tests/servers.py``
re-exports this module), by ``appliance demo`` to serve the root disk and by
``appliance bench``.  Never used on the board.

* :func:`start_qemu_nbd` serves an image file (raw or qcow2), over TCP on 127.0.0.1 (a free
  port) or a Unix socket, optionally with TLS-PSK (``--object tls-creds-psk``), read-only,
  ``--allocation-depth`` or a dirty bitmap (``-B``).
* :func:`start_nbdkit` runs any plugin (memory, sparse-random, pattern, data...) with
  filters, ``--tls=require --tls-psk=FILE``, read-only.
* :func:`start_nbd_server` serves an image with Debian's nbd-server (simple replies, no
  TLS); it forks, so its PID comes from its pid file (:class:`DaemonNBDServer`).
* :func:`make_psk` writes a PSK key file (``identity:hexkey``, mode 0600) in the directory
  layout qemu-nbd wants (``DIR/keys.psk``); the same file serves nbdkit and our client.
* :meth:`NBDServer.kill` drops the server hard (a crash); :meth:`NBDServer.restart` starts
  the same command on the same port (reconnect tests).

Servers run in the foreground (qemu-nbd without ``--fork``, nbdkit ``-f``) so the PID we hold
is the server's; readiness is the server's own pid file, which both write only after they
listen.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config.psk import generate_key, write_psk_file
from appliance.deadline import Deadline
from appliance.errors import ApplianceError
from appliance.host import children

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
LOOPBACK = "127.0.0.1"


class ServerError(ApplianceError):
    """A server (qemu-nbd, nbdkit) could not be started."""


def require(binary: str) -> str:
    """Path of ``binary``, or a clear error naming the Debian package to install."""
    path = shutil.which(binary)
    if path is None:
        pkg = {"qemu-nbd": "qemu-utils", "qemu-img": "qemu-utils", "qemu-io": "qemu-utils",
               "nbdkit": "nbdkit",
               "nbdcopy": "libnbd-bin", "nbdinfo": "libnbd-bin"}.get(binary, binary)
        raise ServerError(f"{binary} not found; install the Debian package {pkg} (./setup.sh test)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def make_psk(directory: Path, identity: str = "alice", key: bytes | None = None) -> Path:
    """Write ``directory/keys.psk`` (mode 0600) holding ``identity:hexkey``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keys.psk"
    write_psk_file(path, identity, key if key is not None else generate_key(), overwrite=True)
    return path


@dataclass
class NBDServer:
    """One running server process and how to reach it."""

    name: str
    argv: list[str]
    pid_file: Path
    log_file: Path
    port: int | None = None
    socket_path: Path | None = None
    export: str = ""
    psk_file: Path | None = None
    identity: str = "alice"
    host: str = LOOPBACK
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def tls(self) -> bool:
        return self.psk_file is not None

    def uri(self, export: str | None = None, *, psk_file: Path | str | None = None,
            identity: str | None = None, tls: bool | None = None) -> str:
        """The NBD URI of this server (``nbds://`` with the PSK file when it uses TLS)."""
        tls = self.tls if tls is None else tls
        export = self.export if export is None else export
        path = "/" + urllib.parse.quote(export, safe="")
        query: dict[str, str] = {}
        psk = psk_file if psk_file is not None else self.psk_file
        if tls and psk is not None:
            query["tls-psk-file"] = str(psk)
        user = f"{identity or self.identity}@" if tls else ""
        if self.socket_path is not None:
            query["socket"] = str(self.socket_path)
            scheme, netloc = ("nbds+unix" if tls else "nbd+unix"), user
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            scheme, netloc = ("nbds" if tls else "nbd"), f"{user}{host}:{self.port}"
        qs = ("?" + urllib.parse.urlencode(query, safe="/")) if query else ""
        return f"{scheme}://{netloc}{path}{qs}"

    def start(self) -> NBDServer:
        """Start the process and wait (bounded) until it listens."""
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = children.popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=log, start_new_session=True)
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = Deadline(READY_TIMEOUT)
        while not deadline.expired:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}: "
                                  f"{self.log_text()[-2000:]}")
            if self.pid_file.exists() and self.pid_file.read_text().strip():
                return
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"{self.name} not ready after {READY_TIMEOUT}s: "
                          f"{self.log_text()[-2000:]}")

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait; safe to call twice."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)

    def restart(self, *, down_for: float = 0.0, hard: bool = True) -> None:
        """Kill the server (SIGKILL; SIGTERM with ``hard=False``, which qcow2 images with
        dirty bitmaps need), stay down ``down_for`` seconds, start it again on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()


def _endpoint(tmp: Path, unix: bool) -> tuple[int | None, Path | None]:
    if unix:
        return None, tmp / "nbd.sock"
    return free_port(), None


def start_qemu_nbd(image: Path, tmp: Path, *, fmt: str = "raw", export: str = "",
                   psk_file: Path | None = None, x509_dir: Path | None = None,
                   unix: bool = False, read_only: bool = False,
                   allocation_depth: bool = False, bitmap: str | None = None,
                   description: str | None = None, shared: int = 8,
                   extra: tuple[str, ...] = (), binary: str | None = None,
                   tls_priority: str | None = None) -> NBDServer:
    """Serve ``image`` with qemu-nbd (persistent, ``shared`` connections at once).

    With ``psk_file`` (made by :func:`make_psk`) the server requires TLS-PSK; qemu-nbd reads
    ``keys.psk`` from the file's directory; ``tls_priority`` is GnuTLS's priority string
    (``NORMAL:-CHACHA20-POLY1305`` leaves AES-GCM).  ``binary`` runs another qemu-nbd than the one
    on PATH (the extended-headers tests use a newer one).  Every path qemu-nbd gets is made
    absolute: it resolves a relative ``dir=`` elsewhere than our working directory.
    """
    tmp, image = tmp.absolute(), image.absolute()
    psk_file = psk_file.absolute() if psk_file is not None else None
    x509_dir = x509_dir.absolute() if x509_dir is not None else None
    tmp.mkdir(parents=True, exist_ok=True)
    port, sock = _endpoint(tmp, unix)
    argv = [binary or require("qemu-nbd"), "-f", fmt, "-t", "-e", str(shared), "-x", export,
            "--pid-file", str(tmp / "qemu-nbd.pid")]
    argv += ["-k", str(sock)] if sock is not None else ["-b", LOOPBACK, "-p", str(port)]
    if psk_file is not None:
        priority = f",priority={tls_priority}" if tls_priority else ""
        argv += ["--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={psk_file.parent}"
                 f"{priority}", "--tls-creds", "tls0"]
    if x509_dir is not None:
        argv += ["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={x509_dir},"
                 "verify-peer=on", "--tls-creds", "tls0"]
    if read_only:
        argv.append("-r")
    if allocation_depth:
        argv.append("--allocation-depth")
    if bitmap is not None:
        argv += ["-B", bitmap]
    if description is not None:
        argv += ["-D", description]
    argv += [*extra, str(image)]
    server = NBDServer("qemu-nbd", argv, tmp / "qemu-nbd.pid", tmp / "qemu-nbd.log", port=port,
                       socket_path=sock, export=export, psk_file=psk_file,
                       identity=_identity(psk_file))
    return server.start()


def start_nbdkit(plugin: str, *plugin_args: str, tmp: Path, psk_file: Path | None = None,
                 filters: tuple[str, ...] = (), unix: bool = False, read_only: bool = False,
                 export: str = "", threads: int | None = None, host: str = LOOPBACK,
                 extra: tuple[str, ...] = ()) -> NBDServer:
    """Run ``nbdkit PLUGIN ARGS`` in the foreground (``--tls=require`` with ``psk_file``).

    ``filters`` are filter names (``"error"``, ``"delay"``); their parameters go in
    ``plugin_args`` as nbdkit expects (``error-rate=1``...).  ``host="::1"`` listens on
    IPv6 loopback.
    """
    tmp = tmp.absolute()
    psk_file = psk_file.absolute() if psk_file is not None else None
    tmp.mkdir(parents=True, exist_ok=True)
    port, sock = _endpoint(tmp, unix)
    argv = [require("nbdkit"), "-f", "-P", str(tmp / "nbdkit.pid")]
    argv += ["-U", str(sock)] if sock is not None else ["-i", host, "-p", str(port)]
    if psk_file is not None:
        argv += ["--tls=require", f"--tls-psk={psk_file}"]
    if read_only:
        argv.append("-r")
    if export:
        argv += ["-e", export]
    if threads is not None:
        argv += ["-t", str(threads)]
    argv += [f"--filter={f}" for f in filters]
    argv += [*extra, plugin, *plugin_args]
    server = NBDServer("nbdkit", argv, tmp / "nbdkit.pid", tmp / "nbdkit.log", port=port,
                       socket_path=sock, export=export, psk_file=psk_file,
                       identity=_identity(psk_file), host=host)
    return server.start()


@dataclass
class DaemonNBDServer(NBDServer):
    """A server that forks into the background (Debian's nbd-server): the PID we hold is
    the one in its pid file, which the daemon writes once it listens."""

    daemon_pid: int | None = None

    @property
    def pid(self) -> int:
        assert self.daemon_pid is not None
        return self.daemon_pid

    def _wait_ready(self) -> None:
        assert self.proc is not None
        self.daemon_pid = None
        deadline = Deadline(READY_TIMEOUT)
        while not deadline.expired:
            code = self.proc.poll()
            if code not in (None, 0):
                raise ServerError(f"{self.name} exited with {code}: {self.log_text()[-2000:]}")
            text = self.pid_file.read_text().strip() if self.pid_file.exists() else ""
            if code == 0 and text.isdigit():
                self.daemon_pid = int(text)
                return
            time.sleep(0.02)
        raise ServerError(f"{self.name} not ready after {READY_TIMEOUT}s: "
                          f"{self.log_text()[-2000:]}")

    def _signal(self, sig: signal.Signals) -> None:
        pid, self.daemon_pid = self.daemon_pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = Deadline(STOP_TIMEOUT)
        while _alive(pid) and not deadline.expired:
            time.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a daemon is not our child to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def start_nbd_server(image: Path, tmp: Path, *, export: str = "disk", read_only: bool = False,
                     ) -> NBDServer:
    """Serve ``image`` with Debian's nbd-server (3.24) on 127.0.0.1 (a free port).

    nbd-server takes its exports from a config file (written into ``tmp``), forks into the
    background and sends simple replies only; it has no TLS-PSK.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "nbd-server.conf"
    config.write_text(
        "[generic]\n    user = root\n    group = root\n"
        f"    listenaddr = {LOOPBACK}\n    port = {port}\n    allowlist = true\n"
        f"[{export}]\n    exportname = {image.resolve()}\n"
        f"    readonly = {str(read_only).lower()}\n"
        "    flush = true\n    fua = true\n    trim = true\n")
    pid_file = tmp / "nbd-server.pid"
    argv = [require("nbd-server"), "-C", str(config), "-p", str(pid_file)]
    server = DaemonNBDServer("nbd-server", argv, pid_file, tmp / "nbd-server.log", port=port,
                             export=export)
    return server.start()


def _identity(psk_file: Path | None) -> str:
    if psk_file is None:
        return "alice"
    return psk_file.read_text().split(":", 1)[0].strip()


def make_image(path: Path, size: int, *, fmt: str = "raw",
               writes: tuple[tuple[int, bytes], ...] = ()) -> Path:
    """Create a sparse image of ``size`` bytes with ``writes`` (offset, data) applied.

    For qcow2 the data is written through ``qemu-io`` so that holes stay unallocated.
    """
    if fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(size)
            for off, data in writes:
                f.seek(off)
                f.write(data)
        return path
    subprocess.run([require("qemu-img"), "create", "-q", "-f", fmt, str(path), str(size)],
                   check=True, timeout=60)
    for off, data in writes:
        qemu_io_write(path, fmt, off, data)
    return path


def qemu_io_write(path: Path, fmt: str, off: int, data: bytes) -> None:
    """Write ``data`` at ``off`` into an image through qemu-io (allocates only that range)."""
    src = path.with_suffix(".chunk")
    src.write_bytes(data)
    try:
        subprocess.run([require("qemu-io"), "-f", fmt, "-c",
                        f"write -q -s {src} {off} {len(data)}", str(path)],
                       check=True, capture_output=True, timeout=60)
    finally:
        src.unlink()


def add_bitmap(image: Path, name: str, *, fmt: str = "qcow2") -> None:
    """Add a persistent dirty bitmap ``name`` to a qcow2 image (``qemu-img bitmap --add``)."""
    subprocess.run([require("qemu-img"), "bitmap", "--add", "-f", fmt, str(image), name],
                   check=True, capture_output=True, timeout=60)


def make_x509(directory: Path) -> tuple[Path, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, laid
    out as QEMU's tls-creds-x509 wants them; returns ``(server_dir, client_dir)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, *, ca: bool = False,
             usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]),
                critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                              crl_sign=True, content_commitment=False,
                                              key_encipherment=False, data_encipherment=False,
                                              key_agreement=False, encipher_only=False,
                                              decipher_only=False), critical=True)
        return b.sign(signer, hashes.SHA256())

    def pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
        if isinstance(obj, x509.Certificate):
            return obj.public_bytes(serialization.Encoding.PEM)
        return obj.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = cert("test CA", ca_key, name("test CA"), ca_key, ca=True)
    srv = cert("localhost", srv_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    cli = cert("client", cli_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    server_dir, client_dir = directory / "server", directory / "client"
    for d, role, c, k in ((server_dir, "server", srv, srv_key),
                          (client_dir, "client", cli, cli_key)):
        d.mkdir(parents=True, exist_ok=True)
        (d / "ca-cert.pem").write_bytes(pem(ca))
        (d / f"{role}-cert.pem").write_bytes(pem(c))
        key_path = d / f"{role}-key.pem"
        key_path.write_bytes(pem(k))
        os.chmod(key_path, 0o600)
    return server_dir, client_dir
