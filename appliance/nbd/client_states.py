"""Client negotiation as data: its states, what may arrive, and the transition table.

Owns the decisions of :class:`~appliance.nbd.negotiation.ClientNegotiation`, h11-style:
``TRANSITIONS[state][arrival] -> (handler, next state)`` in one place that never
touches bytes.  The byte layer turns each complete message (or EOF, or a call such as
``tls_established()``) into one :class:`Arrival`; :func:`transition` looks it up and
raises :class:`~appliance.errors.LocalProtocolError` naming the state when the table
has no entry.  A handler that raises leaves the machine in ERROR, whatever the table
says; rows that end in :attr:`State.ERROR` are exactly those whose handler always
raises.  :attr:`Goto.NEXT_OPTION` is not a state: the client sends the next option of
its plan (fixed when the greeting arrives; a reply may make a later option moot) and
waits in that option's ``*_SENT`` state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from appliance.errors import LocalProtocolError
from appliance.nbd import proto


class State(enum.Enum):
    """Where the client negotiation is."""

    GREETING = "greeting"
    STARTTLS_SENT = "starttls-sent"  # a *_SENT state awaits the reply to that option
    TLS_HANDSHAKE = "tls-handshake"  # the caller is doing the TLS handshake
    EXTENDED_HEADERS_SENT = "extended-headers-sent"
    STRUCTURED_REPLY_SENT = "structured-reply-sent"
    SET_META_CONTEXT_SENT = "set-meta-context-sent"
    GO_SENT = "go-sent"
    INFO_SENT = "info-sent"
    LIST_SENT = "list-sent"
    LIST_META_CONTEXT_SENT = "list-meta-context-sent"
    EXPORT_NAME_REPLY = "export-name-reply"  # NBD_OPT_EXPORT_NAME sent
    ABORTING = "aborting"  # NBD_OPT_ABORT sent; waiting for its reply or EOF
    NEGOTIATED = "negotiated"
    CLOSED = "closed"
    ERROR = "error"


class Goto(enum.Enum):
    """A table target that is not a state."""

    NEXT_OPTION = "next-option"  # send the next planned option, await its reply


class Arrival(enum.Enum):
    """What may arrive: one complete message from the server, EOF, or a caller's call."""

    GREETING_FIXED = "a fixed newstyle greeting"
    GREETING_PLAIN = "a greeting without NBD_FLAG_FIXED_NEWSTYLE"
    EXPORT_NAME_DATA = "the reply to NBD_OPT_EXPORT_NAME"
    ACK = "NBD_REP_ACK"
    ACK_WITH_DATA = "NBD_REP_ACK with data"
    INFO = "NBD_REP_INFO"
    META_CONTEXT = "NBD_REP_META_CONTEXT"
    SERVER = "NBD_REP_SERVER"
    OTHER_REPLY = "a reply of unknown type"
    ERR_UNSUP = "NBD_REP_ERR_UNSUP"
    ERR_TLS_REQD = "NBD_REP_ERR_TLS_REQD"
    ERR_SHUTDOWN = "NBD_REP_ERR_SHUTDOWN"
    ERR_OTHER = "another NBD_REP_ERR_*"
    EOF = "EOF"  # the server closed between messages
    EOF_MID_MESSAGE = "EOF inside a message"
    TLS_ESTABLISHED = "tls_established()"


class Handler(enum.StrEnum):
    """What ClientNegotiation does on an arrival; the value names its method ``_on_<value>``."""

    START_OPTIONS = "start_options"  # fixed newstyle: client flags, then the plan
    EXPORT_NAME_ONLY = "export_name_only"  # plain newstyle: only NBD_OPT_EXPORT_NAME exists
    GREETING_CUT = "greeting_cut"
    EXPORT_NAME_DONE = "export_name_done"
    EXPORT_NAME_REFUSED = "export_name_refused"  # proto.md: the server hangs up
    START_TLS = "start_tls"
    NO_TLS = "no_tls"
    TLS_UP = "tls_up"
    EXTENDED_ON = "extended_on"
    STRUCTURED_ON = "structured_on"
    FALL_BACK = "fall_back"  # the server refused an optional feature
    META_CONTEXT = "meta_context"
    CONTEXTS_CHOSEN = "contexts_chosen"
    NO_CONTEXTS = "no_contexts"
    INFO = "info"
    GO_DONE = "go_done"
    INFO_DONE = "info_done"
    GO_UNSUPPORTED = "go_unsupported"  # fall back to NBD_OPT_EXPORT_NAME
    SERVER = "server"
    LIST_DONE = "list_done"
    LIST_META_DONE = "list_meta_done"
    REFUSED = "refused"
    TLS_REQUIRED = "tls_required"
    SHUTTING_DOWN = "shutting_down"
    ACK_WITH_DATA = "ack_with_data"
    UNEXPECTED = "unexpected"
    CLOSED_EARLY = "closed_early"
    CLOSED = "closed"


type Target = State | Goto
type Transition = tuple[Handler, Target]

NEXT: Final = Goto.NEXT_OPTION
_UNEXPECTED: Final[Transition] = (Handler.UNEXPECTED, State.ERROR)
_CLOSED_EARLY: Final[Transition] = (Handler.CLOSED_EARLY, State.ERROR)


# Every reply an option can get (the reply types, as Arrival).
REPLIES: Final = frozenset({
    Arrival.ACK, Arrival.ACK_WITH_DATA, Arrival.INFO, Arrival.META_CONTEXT, Arrival.SERVER,
    Arrival.OTHER_REPLY, Arrival.ERR_UNSUP, Arrival.ERR_TLS_REQD, Arrival.ERR_SHUTDOWN,
    Arrival.ERR_OTHER})


def _option_row(*, ack: Transition, refused: Transition, unsup: Transition | None = None,
                more: Mapping[Arrival, Transition] = MappingProxyType({}),
                ) -> dict[Arrival, Transition]:
    """The row of a ``*_SENT`` state.  ``ack``: the final NBD_REP_ACK; ``refused``: any
    NBD_REP_ERR_* but TLS_REQD and SHUTDOWN; ``unsup``: NBD_REP_ERR_UNSUP where it
    differs from ``refused``; ``more``: the replies that may come before the ACK.  Every
    other reply type is unexpected, and EOF ends the session too early."""
    row: dict[Arrival, Transition] = {
        **dict.fromkeys(REPLIES, _UNEXPECTED),
        Arrival.ACK: ack,
        Arrival.ACK_WITH_DATA: (Handler.ACK_WITH_DATA, State.ERROR),
        Arrival.ERR_UNSUP: unsup or refused,
        Arrival.ERR_TLS_REQD: (Handler.TLS_REQUIRED, State.ERROR),
        Arrival.ERR_SHUTDOWN: (Handler.SHUTTING_DOWN, State.ERROR),
        Arrival.ERR_OTHER: refused,
        Arrival.EOF: _CLOSED_EARLY,
        Arrival.EOF_MID_MESSAGE: _CLOSED_EARLY,
    }
    row.update(more)
    return row


_NO_TLS: Final[Transition] = (Handler.NO_TLS, State.ERROR)
_REFUSED: Final[Transition] = (Handler.REFUSED, State.ERROR)
_ABORT_ANSWERED: Final[Transition] = (Handler.CLOSED, State.CLOSED)

_ROWS: dict[State, dict[Arrival, Transition]] = {
    State.GREETING: {
        Arrival.GREETING_FIXED: (Handler.START_OPTIONS, NEXT),
        Arrival.GREETING_PLAIN: (Handler.EXPORT_NAME_ONLY, State.EXPORT_NAME_REPLY),
        Arrival.EOF: (Handler.GREETING_CUT, State.ERROR),
        Arrival.EOF_MID_MESSAGE: (Handler.GREETING_CUT, State.ERROR),
    },
    State.STARTTLS_SENT: {
        **_option_row(ack=(Handler.START_TLS, State.TLS_HANDSHAKE), refused=_NO_TLS),
        # without TLS nothing else matters, not even why the server refused it
        Arrival.ERR_TLS_REQD: _NO_TLS,
        Arrival.ERR_SHUTDOWN: _NO_TLS,
    },
    State.TLS_HANDSHAKE: {
        Arrival.TLS_ESTABLISHED: (Handler.TLS_UP, NEXT),
    },
    State.EXTENDED_HEADERS_SENT: _option_row(
        ack=(Handler.EXTENDED_ON, NEXT), refused=(Handler.FALL_BACK, NEXT)),
    State.STRUCTURED_REPLY_SENT: _option_row(
        ack=(Handler.STRUCTURED_ON, NEXT), refused=(Handler.FALL_BACK, NEXT)),
    State.SET_META_CONTEXT_SENT: _option_row(
        ack=(Handler.CONTEXTS_CHOSEN, NEXT), refused=(Handler.NO_CONTEXTS, NEXT),
        more={Arrival.META_CONTEXT: (Handler.META_CONTEXT, State.SET_META_CONTEXT_SENT)}),
    State.GO_SENT: _option_row(
        ack=(Handler.GO_DONE, State.NEGOTIATED), refused=_REFUSED,
        unsup=(Handler.GO_UNSUPPORTED, State.EXPORT_NAME_REPLY),
        more={Arrival.INFO: (Handler.INFO, State.GO_SENT)}),
    State.INFO_SENT: _option_row(
        ack=(Handler.INFO_DONE, State.ABORTING), refused=_REFUSED,
        more={Arrival.INFO: (Handler.INFO, State.INFO_SENT)}),
    State.LIST_SENT: _option_row(
        ack=(Handler.LIST_DONE, State.ABORTING), refused=_REFUSED,
        more={Arrival.SERVER: (Handler.SERVER, State.LIST_SENT)}),
    State.LIST_META_CONTEXT_SENT: _option_row(
        ack=(Handler.LIST_META_DONE, State.ABORTING), refused=_REFUSED,
        more={Arrival.META_CONTEXT: (Handler.META_CONTEXT, State.LIST_META_CONTEXT_SENT)}),
    State.EXPORT_NAME_REPLY: {
        Arrival.EXPORT_NAME_DATA: (Handler.EXPORT_NAME_DONE, State.NEGOTIATED),
        Arrival.EOF: (Handler.EXPORT_NAME_REFUSED, State.ERROR),
        Arrival.EOF_MID_MESSAGE: (Handler.EXPORT_NAME_REFUSED, State.ERROR),
    },
    State.ABORTING: {
        # any answer to NBD_OPT_ABORT, or a clean EOF, ends the session
        **dict.fromkeys(REPLIES, _ABORT_ANSWERED),
        Arrival.EOF: _ABORT_ANSWERED,
        Arrival.EOF_MID_MESSAGE: _CLOSED_EARLY,
    },
    # Final states: nothing may arrive (next_event() refuses before parsing).
    State.NEGOTIATED: {},
    State.CLOSED: {},
    State.ERROR: {},
}

TRANSITIONS: Final[Mapping[State, Mapping[Arrival, Transition]]] = MappingProxyType(
    {state: MappingProxyType(row) for state, row in _ROWS.items()})

# The option each *_SENT state (and ABORTING) awaits the reply to, and back.
OPTION_OF: Final[Mapping[State, int]] = MappingProxyType({
    State.STARTTLS_SENT: proto.NBD_OPT_STARTTLS,
    State.EXTENDED_HEADERS_SENT: proto.NBD_OPT_EXTENDED_HEADERS,
    State.STRUCTURED_REPLY_SENT: proto.NBD_OPT_STRUCTURED_REPLY,
    State.SET_META_CONTEXT_SENT: proto.NBD_OPT_SET_META_CONTEXT,
    State.GO_SENT: proto.NBD_OPT_GO,
    State.INFO_SENT: proto.NBD_OPT_INFO,
    State.LIST_SENT: proto.NBD_OPT_LIST,
    State.LIST_META_CONTEXT_SENT: proto.NBD_OPT_LIST_META_CONTEXT,
    State.ABORTING: proto.NBD_OPT_ABORT,
})
STATE_OF: Final[Mapping[int, State]] = MappingProxyType(
    {opt: state for state, opt in OPTION_OF.items()})

_REPLIES: Final[Mapping[int, Arrival]] = MappingProxyType({
    proto.NBD_REP_ACK: Arrival.ACK,
    proto.NBD_REP_INFO: Arrival.INFO,
    proto.NBD_REP_META_CONTEXT: Arrival.META_CONTEXT,
    proto.NBD_REP_SERVER: Arrival.SERVER,
    proto.NBD_REP_ERR_UNSUP: Arrival.ERR_UNSUP,
    proto.NBD_REP_ERR_TLS_REQD: Arrival.ERR_TLS_REQD,
    proto.NBD_REP_ERR_SHUTDOWN: Arrival.ERR_SHUTDOWN,
})


def reply_arrival(reply: int, length: int) -> Arrival:
    """What an option reply of type ``reply`` with ``length`` bytes of data is."""
    arrival = _REPLIES.get(reply)
    if arrival is None:
        return Arrival.ERR_OTHER if reply & proto.NBD_REP_FLAG_ERROR else Arrival.OTHER_REPLY
    if arrival is Arrival.ACK and length:
        return Arrival.ACK_WITH_DATA
    return arrival


def transition(state: State, arrival: Arrival) -> Transition:
    """The table's entry for ``arrival`` in ``state``; LocalProtocolError if it has none."""
    try:
        return TRANSITIONS[state][arrival]
    except KeyError:
        raise LocalProtocolError(
            f"{arrival.value} is not expected in state {state.value}") from None
