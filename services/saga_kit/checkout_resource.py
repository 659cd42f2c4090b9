"""The Checkout custom resource as every component names it: its API group, version,
plural and kind, and its phases.

The operator decides how a checkout moves between the phases (``checkout_operator.saga``);
the REST API, the tools and the tests only read them. Keeping the vocabulary here lets
the operator change its internals without the others following.
"""

from __future__ import annotations

import enum

GROUP = "checkout.saga.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "checkouts"
KIND = "Checkout"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    AUTHORIZED = "Authorized"
    RESERVED = "Reserved"
    AWAITING_PAYMENT = "AwaitingPayment"
    SETTLED = "Settled"
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"


# A checkout in one of these has ended; its phase never changes again.
TERMINAL = frozenset({Phase.SETTLED, Phase.EXPIRED, Phase.CANCELLED, Phase.REJECTED})
