"""The User service: who is buying.

It registers users, logs them in with a signed, expiring access token, revokes
that token on logout, and answers the other services (the checkout API, the
operator, the Product service) over gRPC when they need to turn a token into a
user. Layout, as in every service of the project: transport (``rest_api``,
``grpc_api``) -> ``domain`` (rules, no I/O) -> ``store`` (SQL) and
``revocations`` (Redis); ``app`` wires them and ``__main__`` runs them.
"""
