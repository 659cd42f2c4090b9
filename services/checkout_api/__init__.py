"""The REST checkout API: the shop front end's door into the saga.

POST creates a Checkout resource (idempotently with ``Idempotency-Key``) and
waits, bounded, until the saga has a payment page or an answer; reads come from
the live resource or, for archived checkouts, from the operator's read model.
A user only ever sees or cancels their own checkouts.
"""
