-- Roles of user accounts in their tenant, one-time set-password tokens, and the audit log.

-- Devices have no role; every user existing before roles becomes its tenant's owner.
ALTER TABLE accounts ADD COLUMN role text CHECK (role IN ('owner', 'admin', 'viewer'));
UPDATE accounts SET role = 'owner' WHERE kind = 'user';
-- A user inserted without a role is an owner, as every user was before roles (code and scripts that predate them
-- keep working); the check then holds users to a role and devices to none.
CREATE FUNCTION accounts_default_role() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'user' AND NEW.role IS NULL THEN
        NEW.role := 'owner';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER accounts_default_role BEFORE INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_default_role();
ALTER TABLE accounts ADD CONSTRAINT accounts_role_of_users CHECK ((kind = 'user') = (role IS NOT NULL));
CREATE INDEX accounts_tenant_role ON accounts (tenant_id, role) WHERE kind = 'user';

-- A set-password token is answered once (account created, password reset) and stored only as its SHA-256:
-- a copy of this table sets no password. Redeemed once, before expires_at.
CREATE TABLE password_set_tokens (
    token_sha256  bytea PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    created_at    timestamptz NOT NULL
);
CREATE INDEX password_set_tokens_account ON password_set_tokens (account_id);
CREATE INDEX password_set_tokens_expiry ON password_set_tokens (expires_at);

-- Who did what to which target, when, from where. tenant_id NULL: an action outside any tenant.
-- actor_id NULL with actor_name 'esm:<os user>': the operator's command line. aggregate_key makes repeated
-- events one row (failed logins per username, address and minute; a first login of the day per account).
CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid,
    at             timestamptz NOT NULL,
    actor_id       uuid,
    actor_name     text,
    action         text NOT NULL,
    target_type    text NOT NULL,
    target_id      text,
    details        jsonb NOT NULL,
    request_id     text,
    client_addr    text,
    user_agent     text,
    aggregate_key  text UNIQUE
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at DESC, id DESC);
CREATE INDEX audit_log_at ON audit_log (at);
