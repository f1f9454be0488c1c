-- Account state that takes effect at once: a version bumped on every change of an account (block,
-- unblock, deactivation, password; later roles), carried by access tokens, so a token issued before
-- a change is refused on its next request.
ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- Failed logins are counted per username (existing or not) so the answers cannot tell the two
-- apart: one row per (username, client address) locks that pair, and the row of address '*' counts
-- the username's failures from every address, which slow its further attempts down.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    username      text NOT NULL,
    client_addr   text NOT NULL,
    failures      integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (username, client_addr)
);
CREATE INDEX login_failures_updated ON login_failures (updated_at);

-- The token a refresh issued in exchange for this one: a retry of the same refresh within a short
-- window answers the same pair again (re-signed from the same claims) instead of revoking the family.
ALTER TABLE refresh_tokens ADD COLUMN successor_jti uuid;
