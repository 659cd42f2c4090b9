"""The scale-out bench's pure parts: an extra replica's environment, a shard's
settings, and how buyers are spread over the APIs (benchmarks/scale_out.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.saga_shop import Account
from benchmarks.scale_out import (
    PORT_VARIABLES,
    Door,
    Shard,
    accounts_of,
    doors_for,
    parse_environ,
    replica_env,
    restarted,
    shares_of,
)
from saga_kit.events import Topology

PRODUCT = {
    "PRODUCT_DATABASE_URL": "postgresql://saga:pw@127.0.0.1:15432/checkout",
    "PRODUCT_HTTP_PORT": "18200",
    "PRODUCT_GRPC_PORT": "18201",
    "PRODUCT_USER_SERVICE": "127.0.0.1:18101",
    "NATS_USER": "product-service",
}


def test_environ_is_split_on_nul_and_keeps_equals_signs_in_values() -> None:
    raw = b"A=1\0DSN=postgresql://u:p@h/db?x=y\0EMPTY=\0"
    assert parse_environ(raw) == {"A": "1", "DSN": "postgresql://u:p@h/db?x=y", "EMPTY": ""}


def test_a_replica_changes_only_its_own_ports() -> None:
    env = replica_env("product-service", PRODUCT, [28200, 28201])
    assert env == {**PRODUCT, "PRODUCT_HTTP_PORT": "28200", "PRODUCT_GRPC_PORT": "28201"}
    assert PRODUCT["PRODUCT_HTTP_PORT"] == "18200"  # the running app's copy is untouched


def test_a_replica_of_an_app_without_its_port_variables_is_refused() -> None:
    with pytest.raises(ValueError, match="has no CHECKOUT_API_PORT"):
        replica_env("checkout-api", PRODUCT, [28080])


def test_a_replica_needs_one_port_per_port_variable() -> None:
    with pytest.raises(ValueError, match="needs 2 ports"):
        replica_env("product-service", PRODUCT, [28200])


def test_every_app_of_a_shard_is_one_the_bench_can_copy() -> None:
    shard = Shard("scale-out-b", product_grpc=28201, listener_port=28081)
    for app in ("checkout-operator", "expiry-worker", "checkout-api", "payment-listener"):
        assert app in PORT_VARIABLES
        assert shard.settings(app)
    assert "product-service" in PORT_VARIABLES


def test_a_shard_shares_no_namespace_schema_stream_lease_or_queue_with_the_first() -> None:
    shard = Shard("scale-out-b", product_grpc=28201, listener_port=28081)
    operator = shard.settings("checkout-operator")
    assert operator["CHECKOUT_NAMESPACE"] == "scale-out-b"
    assert operator["CHECKOUT_LEASE_NAMESPACE"] == "scale-out-b"
    assert operator["CHECKOUT_LEASE_NAME"] != "checkout-operator"
    assert operator["CHECKOUT_DB_SCHEMA"] != "checkouts"
    assert operator["CHECKOUT_EXPIRY_QUEUE"] != "arq:queue"
    assert operator["CHECKOUT_PRODUCT_SERVICE"] == "127.0.0.1:28201"
    assert operator["MIDTRANS_NOTIFICATION_URL"].startswith("http://127.0.0.1:28081/")
    assert shard.settings("expiry-worker") == operator  # it runs the operator's sagas' expiry
    # The API reads the journal the shard's operator writes, in the shard's namespace.
    api = shard.settings("checkout-api")
    assert api["CHECKOUT_DB_SCHEMA"] == operator["CHECKOUT_DB_SCHEMA"]
    assert api["CHECKOUT_API_NAMESPACE"] == "scale-out-b"
    assert api["CHECKOUT_PRODUCT_SERVICE"] == operator["CHECKOUT_PRODUCT_SERVICE"]
    # Operator, listener and Product service agree on one set of streams, not the default.
    events = {
        shard.settings(app)["EVENTS_NAMESPACE"]
        for app in ("checkout-operator", "payment-listener", "product-service")
    }
    assert len(events) == 1
    (namespace,) = events
    assert Topology.for_namespace(namespace).stream != Topology().stream
    assert shard.settings("payment-listener")["CHECKOUT_NAMESPACE"] == "scale-out-b"
    assert shard.settings("product-service")["PRODUCT_DB_SCHEMA"] != "products"


@given(buyers=st.integers(0, 200), count=st.integers(1, 8))
def test_buyers_are_spread_evenly_and_each_keeps_one_door(buyers: int, count: int) -> None:
    doors = [Door(f"http://127.0.0.1:{18080 + i}/api/v1", "default") for i in range(count)]
    chosen = doors_for(buyers, doors)
    assert len(chosen) == buyers
    shares = Counter(chosen)
    assert set(shares) <= set(doors)
    each = [shares[d] for d in doors]
    assert max(each) - min(each) <= 1
    if buyers >= count:
        assert set(shares) == set(doors)


def test_no_door_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no API"):
        doors_for(4, [])


@given(people=st.integers(0, 60), count=st.integers(1, 5))
def test_each_buyer_shops_at_one_door_and_every_buyer_at_some_door(people: int, count: int) -> None:
    accounts = [Account(f"u{i}", str(i), "token", 0.0) for i in range(people)]
    shares = [accounts_of(accounts, door, count) for door in range(count)]
    ids = [a.user_id for share in shares for a in share]
    assert sorted(ids) == sorted(a.user_id for a in accounts)  # all, and none twice
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


def test_a_door_outside_the_doors_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="door 2 of 2"):
        accounts_of([], 2, 2)


def test_a_process_restarted_or_stopped_during_a_run_is_named() -> None:
    before = {"operator": 10, "API": 11, "API 2": 12}
    assert restarted(before, dict(before)) == []
    assert restarted(before, {"operator": 99, "API": 11}) == ["operator", "API 2"]


def test_a_shards_buyers_never_shop_in_default_and_defaults_never_in_the_shard() -> None:
    home = [Account(f"h{i}", f"h{i}", "token", 0.0) for i in range(6)]
    away = [Account(f"a{i}", f"a{i}", "token", 0.0) for i in range(3)]
    doors = [
        Door("http://127.0.0.1:18080/api/v1", "default"),
        Door("http://127.0.0.1:28080/api/v1", "scale-out-b"),
        Door("http://127.0.0.1:28081/api/v1", "default"),
    ]
    first, shard, second = shares_of(home, away, doors)
    assert list(shard) == away
    assert sorted(a.user_id for a in [*first, *second]) == sorted(a.user_id for a in home)
    assert not {a.user_id for a in first} & {a.user_id for a in second}
