"""A local Midtrans-compatible server for development, demos and tests.

No public project emulates Snap together with the status API and signed, retried webhooks,
so the project has its own. It follows the documented Midtrans behaviour (see
``/work/shared/reference/midtrans.md`` in the project notes): Snap validation, status 404
until a payment method is chosen, Snap expiry, cancel/expire/refund with their body status
codes, and notifications signed with the documented formula and retried on Midtrans'
schedule. A time scale shrinks every delay so tests can run hours of retries in
milliseconds. A ``/_sandbox`` control API plays the customer (choose, pay, deny, expire) and
simulates what real systems see, such as a settlement arriving after expiry.
"""

from midtrans_sandbox.app import create_app
from midtrans_sandbox.settings import SandboxSettings

__all__ = ["SandboxSettings", "create_app"]
