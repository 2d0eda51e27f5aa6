"""A fleet of boards served from one host: state, golden images, servers, boot storm.

* :mod:`.state`: the fleet directory (boards, golden versions, the server's address).
* :mod:`.golden`: immutable golden image versions (``appliance golden import``).
* :mod:`.boards`: per-board keys and exports (``appliance fleet add/show/list/reset/remove``).
* :mod:`.serve`: one qemu-nbd per board, each knowing only that board's PSK
  (``appliance serve``).
* :mod:`.trace` and :mod:`.storm`: a recorded boot's block requests, replayed by many
  simulated boards at once (``appliance bench storm``).

Host only: the board never imports this package.
"""
