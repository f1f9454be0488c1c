-- Devices, equipment and tenant settings managed over the admin API.

-- What the device list shows: the last login, and what process records of each batch in its own transaction
-- (the last upload, the newest reading). A soft delete keeps the row, so the username is never reused and the
-- data stays attributed. A rotation with a grace period keeps the previous hash until it expires.
ALTER TABLE accounts
    ADD COLUMN last_login_at                timestamptz,
    ADD COLUMN last_upload_at               timestamptz,
    ADD COLUMN last_reading_at              timestamptz,
    ADD COLUMN deleted_at                   timestamptz,
    ADD COLUMN previous_password_hash       text,
    ADD COLUMN previous_password_expires_at timestamptz;

-- Uploads and readings per account and UTC hour, for the last 24 hours' counts; each upsert deletes its
-- account's hours older than two days, so an account holds at most ~49 rows.
CREATE TABLE account_upload_stats (
    account_id  uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hour        timestamptz NOT NULL,
    uploads     integer NOT NULL DEFAULT 0,
    readings    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, hour)
);

-- A refresh token issued to a login with the previous password during a grace period: refused once the grace
-- ends, and its successors inherit the bound.
ALTER TABLE refresh_tokens ADD COLUMN grace_until timestamptz;

-- Display overrides set over the admin API (uploads write name and location, never these), and retirement:
-- a retired equipment is hidden from lists and silence rules, stays retired when uploads continue, keeps its data.
ALTER TABLE equipment
    ADD COLUMN display_name     text,
    ADD COLUMN display_location text,
    ADD COLUMN retired_at       timestamptz;

-- The language of the tenant's notifications.
ALTER TABLE tenants ADD COLUMN language text NOT NULL DEFAULT 'pt-BR' CHECK (language IN ('pt-BR', 'en'));
