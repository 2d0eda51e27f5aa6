"""appliance.relay imports each name from its module on first use: the kTLS path, which
shares only the reconnect policy, boots without importing the relay (its core's 11
dataclasses among them).  Each case runs in a fresh interpreter."""

from __future__ import annotations

from tests.fresh_python import fresh_python


def test_the_ktls_path_imports_only_the_policy() -> None:
    out = fresh_python("import sys, appliance.ktls.supervisor, appliance.ktls.session\n"
                       "print(sorted(m for m in sys.modules if m.startswith('appliance.relay')))")
    assert out == "['appliance.relay', 'appliance.relay.policy']"


def test_every_exported_name_still_imports() -> None:
    out = fresh_python("import appliance.relay as r\n"
                       "from appliance.relay import stale_tls\n"
                       "from appliance.relay.core import RelayCore\n"
                       "print(all(getattr(r, n) is not None for n in r.__all__),"
                       " r.RelayCore is RelayCore, stale_tls.__name__)\n"
                       "try:\n    r.nothing_here\nexcept AttributeError as exc:\n    print(exc)")
    assert out.splitlines() == ["True True appliance.relay.stale_tls",
                                "module 'appliance.relay' has no attribute 'nothing_here'"]
