"""Users, roles and the audit log through the public URL (the admin function behind the front door), in fresh
tenants: an owner creates an admin and a viewer who set their passwords; the viewer reads but writes nothing;
the admin cannot touch the owner; each action is in the audit log with its actor and target."""

from support.admin import call, new_user
from support.stack import new_tenant


def test_owner_admin_and_viewer_through_the_front_door_each_action_audited():
    tenant = new_tenant()
    owner_token = tenant.user_token()
    admin, admin_token = new_user(owner_token, "admin")
    viewer, viewer_token = new_user(owner_token, "viewer")

    refused = call("POST", "/api/v1/admin/users", viewer_token, {"username": "e2e-x", "role": "viewer"})
    analytics = call("GET", "/api/v1/analytics/equipments", viewer_token)
    touch_owner = call("PATCH", f"/api/v1/admin/users/{viewer['id']}", admin_token, {"role": "owner"})
    blocked = call("PATCH", f"/api/v1/admin/users/{viewer['id']}", admin_token, {"blocked": True})
    audit = call("GET", "/api/v1/admin/audit", owner_token, limit=50).json()["entries"]

    assert (refused.status_code, refused.json()["required_role"]) == (403, "admin")
    assert analytics.status_code == 200
    assert (touch_owner.status_code, touch_owner.json()["required_role"]) == (403, "owner")
    assert blocked.status_code == 200
    assert call("GET", "/api/v1/analytics/equipments", viewer_token).status_code == 401
    seen = {(entry["action"], entry["actor"]["id"], entry["target"]["id"]) for entry in audit}
    assert ("user.block", admin["id"], viewer["id"]) in seen
    owner_id = call("GET", "/api/v1/auth/me", owner_token).json()["account_id"]
    assert ("user.create", owner_id, admin["id"]) in seen and ("user.create", owner_id, viewer["id"]) in seen


def test_admin_routes_answer_401_without_a_token_404_across_tenants_and_422_with_paths():
    ours, theirs = new_tenant(), new_tenant()
    token = ours.user_token()
    their_id = call("GET", "/api/v1/auth/me", theirs.user_token()).json()["account_id"]

    assert call("GET", "/api/v1/admin/users").status_code == 401
    assert call("GET", "/api/v1/admin/audit").status_code == 401
    assert call("PATCH", f"/api/v1/admin/users/{their_id}", token, {"blocked": True}).status_code == 404
    bad = call("POST", "/api/v1/admin/users", token, {"username": "", "role": "king"})
    assert bad.status_code == 422 and bad.json()["paths"] == ["$.username", "$.role"]
