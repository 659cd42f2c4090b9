-- The operator's read model and saga journal. Every phase change is recorded here
-- (for listing and audit, also after the Checkout resource is deleted), and so are
-- the effects already carried out, so a restarted operator neither repeats nor
-- forgets one without writing progress to the apiserver.
CREATE TABLE checkouts (
    order_id                 text PRIMARY KEY,
    namespace                text NOT NULL,
    name                     text NOT NULL,
    uid                      text NOT NULL,
    user_id                  text NOT NULL,
    currency                 text NOT NULL,
    phase                    text NOT NULL,
    subtotal                 bigint,
    fees                     bigint,
    discount                 bigint,
    total                    bigint,
    payment_attempt          integer NOT NULL DEFAULT 0,
    midtrans_order_id        text UNIQUE,
    snap_token               text,
    redirect_url             text,
    payment_status           text,
    fraud_status             text,
    midtrans_transaction_id  text,
    paid_at                  timestamptz,
    expires_at               timestamptz,
    failure_reason           text,
    failure_message          text,
    -- A Reserve call was made (it may hold stock until released).
    reserve_attempted        boolean NOT NULL DEFAULT false,
    committed_published      boolean NOT NULL DEFAULT false,
    expiry_scheduled         boolean NOT NULL DEFAULT false,
    final_event_published    boolean NOT NULL DEFAULT false,
    refund_requested         boolean NOT NULL DEFAULT false,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    finished_at              timestamptz,
    deleted_at               timestamptz
);
CREATE INDEX checkouts_user ON checkouts (user_id, created_at DESC, order_id);
CREATE INDEX checkouts_open ON checkouts (namespace) WHERE finished_at IS NULL;

CREATE TABLE checkout_items (
    order_id   text NOT NULL REFERENCES checkouts ON DELETE CASCADE,
    product_id text NOT NULL,
    unit_price bigint NOT NULL,
    quantity   integer NOT NULL,
    name       text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX checkout_items_product ON checkout_items (product_id);

CREATE TABLE checkout_history (
    id       bigserial PRIMARY KEY,
    order_id text NOT NULL REFERENCES checkouts ON DELETE CASCADE,
    phase    text NOT NULL,
    reason   text NOT NULL DEFAULT '',
    message  text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkout_history_order ON checkout_history (order_id, id);
