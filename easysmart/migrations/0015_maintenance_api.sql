-- Maintenance windows are managed over the alerts API: who made each one, and the tenant's windows listed
-- newest first in keyset pages.
ALTER TABLE maintenance_windows ADD COLUMN created_by uuid REFERENCES accounts(id);
CREATE INDEX maintenance_windows_tenant_started ON maintenance_windows (tenant_id, starts_at DESC, id);
