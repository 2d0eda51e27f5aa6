"""``appliance status``: on the booted board, what serves its root and how the boot went."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="on the board: root device, relay, boot timeline",
                       description="Report the device mounted on / and the relay serving it "
                       "(the pid the kernel records in /sys/block/nbdN/pid, alive, argv[0] "
                       "starting with '@'), the DHCP lease keeper (state, renewals, expiry; none "
                       "with a static address), and the boot timeline the initramfs kept in "
                       "/run/nbdroot/timeline.json.  Exit status 0 when the root is on NBD "
                       "with a live relay, 1 otherwise.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from appliance.status import collect, lease, timeline

    st = collect()
    steps = timeline()
    kept = lease()
    if args.json:
        print(json.dumps({"root": st.device, "relay_pid": st.relay_pid,
                          "relay_alive": st.relay_alive, "relay_argv0": st.relay_argv0,
                          "ok": st.ok, "timeline": steps,
                          "lease": kept and {**kept.state, "keeper_alive": kept.alive,
                                             "keeper_argv0": kept.argv0}}, indent=1))
    else:
        print(st.line())
        if kept is not None:
            print(kept.line(time.time()))
        for s in steps:
            print(f"  {s.get('name', '?'):<8} {float(str(s.get('duration', 0))):6.2f} s  "
                  f"{s.get('detail', '')}")
    return 0 if st.ok else 1
