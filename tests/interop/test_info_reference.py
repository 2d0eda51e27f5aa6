"""``nbd info`` where it disagreed with nbdinfo (issue 12): negotiated contexts, block
sizes the server never sent, ``--map URI``, oldstyle and plain newstyle servers,
non-ASCII names, an early Ctrl-C.  Against real nbdkit 1.32."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import appliance as appliance_package
from tests.interop.util import appliance, merged_map, nbdinfo_map, one_line_error, tool

pytestmark = pytest.mark.interop

BLOCK_KEYS = ("block_size_minimum", "block_size_preferred", "block_size_maximum")


def test_no_structured_replies_means_no_contexts(nbd_servers) -> None:
    """Defect 8: nbdkit --no-sr still lists base:allocation, but none can be used."""
    srv = nbd_servers.nbdkit("memory", "1M", extra=("--no-sr",))
    r = appliance("nbd", "info", srv.uri())
    assert r.returncode == 0, r.stderr
    assert "contexts:" not in r.stdout and "base:allocation" not in r.stdout
    facts = json.loads(appliance("nbd", "info", "--json", srv.uri()).stdout)
    assert facts["structured"] is False and facts["exports"][0]["contexts"] == []
    r = appliance("nbd", "info", "--map", srv.uri())
    assert "does not do structured replies" in one_line_error(r)


def test_block_sizes_only_when_sent(nbd_servers) -> None:
    """Defect 9: nbdkit memory sends no NBD_INFO_BLOCK_SIZE; nbdinfo prints none."""
    plain = nbd_servers.nbdkit("memory", "1M")
    theirs = json.loads(tool("nbdinfo", "--json", plain.uri()).stdout)["exports"][0]
    ours = json.loads(appliance("nbd", "info", "--json", plain.uri()).stdout)["exports"][0]
    assert not any(k in theirs for k in BLOCK_KEYS)
    assert not any(k in ours for k in BLOCK_KEYS)
    assert "block_size" not in appliance("nbd", "info", plain.uri()).stdout
    limited = nbd_servers.nbdkit("memory", "1M", "blocksize-minimum=4096",
                                 "blocksize-maximum=65536", filters=("blocksize-policy",))
    theirs = json.loads(tool("nbdinfo", "--json", limited.uri()).stdout)["exports"][0]
    ours = json.loads(appliance("nbd", "info", "--json", limited.uri()).stdout)["exports"][0]
    assert [ours[k] for k in BLOCK_KEYS] == [theirs[k] for k in BLOCK_KEYS]
    assert ours["block_size_maximum"] == 65536


def test_map_then_uri(nbd_servers) -> None:
    """Defect 10: ``info --map URI`` as nbdinfo takes it (the default context)."""
    srv = nbd_servers.nbdkit("data", "data=@1048576 1", "size=4M")
    r = appliance("nbd", "info", "--json", "--map", srv.uri())
    assert r.returncode == 0, r.stderr
    assert merged_map(json.loads(r.stdout)) == nbdinfo_map(srv.uri())


def test_oldstyle_server_is_refused_with_what_to_do(nbd_servers) -> None:
    """Defect 11: name what the server speaks and how to fix it."""
    srv = nbd_servers.nbdkit("memory", "1M", extra=("-o",))
    for argv in (("info",), ("copy",)):
        tail = ("/dev/null",) if argv == ("copy",) else ()
        line = one_line_error(appliance("nbd", *argv, srv.uri(), *tail))
        assert "oldstyle" in line and "newstyle" in line, line


def test_plain_newstyle_info_works_like_nbdinfo(nbd_servers) -> None:
    """Defect 11: non-fixed newstyle (nbdkit --mask-handshake=0): info works, as copy did."""
    srv = nbd_servers.nbdkit("memory", "1M", extra=("--mask-handshake=0",))
    r = appliance("nbd", "info", srv.uri())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("protocol: newstyle without TLS, using simple packets\n")
    ours = json.loads(appliance("nbd", "info", "--json", srv.uri()).stdout)
    theirs = json.loads(tool("nbdinfo", "--json", srv.uri()).stdout)
    assert ours["protocol"] == theirs["protocol"] == "newstyle"
    assert ours["exports"][0]["export-size"] == theirs["exports"][0]["export-size"]


def test_non_ascii_export_name_is_printed_as_is(nbd_servers) -> None:
    """Defect 12: ``export="grün"``, not ``\\u00fc``."""
    srv = nbd_servers.nbdkit("memory", "1M", export="grün")
    r = appliance("nbd", "info", srv.uri())
    assert r.returncode == 0, r.stderr
    assert 'export="grün":' in r.stdout.splitlines()
    assert '"export-name": "grün"' in appliance("nbd", "info", "--json", srv.uri()).stdout


@pytest.mark.parametrize("delay_ms", [5, 20, 40, 60, 90])
def test_early_ctrl_c_is_quiet(nbd_servers, delay_ms: int) -> None:
    """Defect 12: SIGINT while the command starts: no KeyboardInterrupt traceback."""
    srv = nbd_servers.nbdkit("memory", "1M")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "nbd", "info", srv.uri()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    # A traceback from before our handler is installed (interpreter start-up: site, runpy,
    # the package import up to that line) is outside Python's reach; after it, none.
    frames = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("File ")]
    assert all(_before_handler(f) for f in frames), err
    if frames or any(m in err for m in INTERPRETER_START_UP):
        return
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, err)


PACKAGE = Path(appliance_package.__file__).parent
# CPython's own messages for a Ctrl-C before it runs any module of ours
INTERPRETER_START_UP = ("Fatal Python error: init_import_site", "Could not import runpy module")


def _before_handler(frame: str) -> bool:
    """A traceback line (``File "PATH", line N, in ...``) that runs before the CLI's early
    SIGINT handler is in place: outside our package, or the lines that import it."""
    path, _, rest = frame.removeprefix('File "').partition('", line ')
    if not path.startswith(str(PACKAGE)):
        return True
    line = int(rest.split(",")[0])
    if path == str(PACKAGE / "__main__.py"):
        return True  # its imports lead to the handler (it has no other code before main())
    source = (PACKAGE / "cli" / "__init__.py").read_text().splitlines()
    install = next(i for i, text in enumerate(source, 1) if "# EARLY-SIGINT" in text)
    return path == str(PACKAGE / "cli" / "__init__.py") and line <= install
