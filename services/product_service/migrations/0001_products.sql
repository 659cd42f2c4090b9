CREATE TABLE products (
    id          text PRIMARY KEY,
    owner_id    text NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND length(slug) <= 100),
    description text NOT NULL DEFAULT '',
    price       bigint NOT NULL CHECK (price >= 0),
    stock       bigint NOT NULL,
    reserved    bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CONSTRAINT products_reserved_nonnegative CHECK (reserved >= 0),
    CONSTRAINT products_stock_covers_reserved CHECK (stock >= reserved)
);
-- A slug is unique among live products; a deleted product frees its slug.
CREATE UNIQUE INDEX products_live_slug ON products (slug) WHERE deleted_at IS NULL;
CREATE INDEX products_owner ON products (owner_id) WHERE deleted_at IS NULL;
CREATE INDEX products_catalog ON products (created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE reservations (
    transaction_id text PRIMARY KEY,
    user_id        text NOT NULL,
    status         text NOT NULL
        CHECK (status IN ('reserved', 'committed', 'settled', 'cancelled', 'expired')),
    -- Fingerprint of the requested items: a retry must ask for the same thing.
    request_hash   text NOT NULL,
    subtotal       bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservation_lines (
    transaction_id text NOT NULL REFERENCES reservations ON DELETE CASCADE,
    product_id     text NOT NULL REFERENCES products (id),
    product_name   text NOT NULL,
    unit_price     bigint NOT NULL CHECK (unit_price >= 0),
    quantity       integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (transaction_id, product_id)
);
CREATE INDEX reservation_lines_product ON reservation_lines (product_id);

-- Every transaction event the consumer saw, applied or not: the audit trail of
-- duplicates, stale and refused events (e.g. `cancelled` after `settled`).
CREATE TABLE reservation_events (
    id             bigserial PRIMARY KEY,
    transaction_id text NOT NULL,
    event_type     text NOT NULL,
    outcome        text NOT NULL
        CHECK (outcome IN ('applied', 'duplicate', 'refused', 'unknown_transaction')),
    from_status    text,
    to_status      text,
    stream_seq     bigint,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservation_events_tx ON reservation_events (transaction_id);
