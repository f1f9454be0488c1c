"""The administration API (`/api/v1/admin/`, the admin function): users, devices, equipment, tenant settings
and the audit log, each in its module."""
