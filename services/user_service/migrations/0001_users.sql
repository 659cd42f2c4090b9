-- Users of the shop. Usernames and emails are stored lower-cased (the CHECKs
-- guarantee it), so plain unique constraints make them unique regardless of case;
-- the constraint names tell the service which of the two a duplicate hit.
CREATE TABLE users (
    id            text        PRIMARY KEY,
    username      text        NOT NULL,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_username_lower CHECK (username = lower(username)),
    CONSTRAINT users_email_lower CHECK (email = lower(email)),
    CONSTRAINT users_password_hash_format CHECK (password_hash LIKE 'scrypt$%')
);
