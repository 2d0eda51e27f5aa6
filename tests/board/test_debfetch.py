"""image.debfetch: the cache lookup and the private apt configuration (no network needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.errors import ImageError
from image.debfetch import AptFetcher, extract
from tests.board.conftest import KERNEL_PACKAGE


def test_cache_picks_the_newest_matching_deb_and_not_the_rt_flavour(tmp_path: Path) -> None:
    for name in ["linux-image-6.12.9+deb13-armmp_6.12.9-1_armhf.deb",
                 "linux-image-6.12.10+deb13-armmp_6.12.10-1_armhf.deb",
                 "linux-image-6.12.11+deb13-rt-armmp_6.12.11-1_armhf.deb",
                 "linux-image-6.12.12+deb13-armmp_6.12.12-1_arm64.deb"]:
        (tmp_path / name).touch()
    hit = AptFetcher(cache=tmp_path).cached(KERNEL_PACKAGE)
    assert hit is not None and hit.name == "linux-image-6.12.10+deb13-armmp_6.12.10-1_armhf.deb"
    assert AptFetcher(cache=tmp_path).cached(r"busybox") is None


def test_private_apt_config_leaves_the_host_alone(tmp_path: Path) -> None:
    fetcher = AptFetcher(cache=tmp_path)
    env = fetcher._config()
    conf = Path(env["APT_CONFIG"])
    assert conf.is_relative_to(tmp_path)
    dump = subprocess.run(["apt-config", "dump"], env=env, capture_output=True, text=True,
                          check=True).stdout
    assert 'APT::Architecture "armhf";' in dump
    assert f'Dir "{fetcher.state}/";' in dump
    sources = (fetcher.state / "etc/apt/sources.list").read_text()
    assert sources == "deb [arch=armhf] http://deb.debian.org/debian stable main\n"


def test_extract_of_a_non_deb_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "x.deb"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageError, match=r"unpacking x\.deb failed"):
        extract(bad, tmp_path / "out")
