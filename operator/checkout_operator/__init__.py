"""The Checkout saga operator (kopf handlers and the pure saga model).

Import name ``checkout_operator``: the folder is ``operator/`` but a package of
that name would shadow the standard library's ``operator`` module.
"""
