"""The administration API's services (functions/admin): devices, equipment, tenant settings.

Each service takes the caller's principal, the path's ids and the parsed JSON body, checks the role the action
needs (easysmart.authz), and answers a dict. A body is checked whole before anything changes: every problem is
answered at once (422, each with its JSON path). Ids of another tenant answer 404, like ids that do not exist.
"""
