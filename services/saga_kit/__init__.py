"""Building blocks every service of the project shares.

Each service has the same three rooms: transport (gRPC servicer, FastAPI routes)
-> domain (rules, no I/O) -> store (SQL via asyncpg). This package holds what they
have in common: settings and secrets, Postgres pools and migrations, the gRPC
service-to-service credential, rich gRPC errors, transaction events, logging.
"""
