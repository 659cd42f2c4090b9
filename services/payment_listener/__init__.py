"""The Midtrans webhook listener: verify, record durably, answer fast.

Stateless: a notification that passes validation and the signature check is
published to the ``midtrans.payment_status`` JetStream stream (deduplicated by
message id) and only then answered 2xx; the operator consumes the stream and
applies it to the Checkout under the same compare-and-swap as every other
writer. If NATS is down the listener answers 503, so Midtrans retries instead of
the notification being lost; an apiserver outage only delays applying it.
"""
