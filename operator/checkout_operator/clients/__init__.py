"""Small clients of the outside world, each behind a narrow interface.

Tests point them at the real local servers (apiserver, Postgres, NATS, Redis,
the User and Product services and the Midtrans sandbox).
"""
