"""The farm's admin client: enrol clients, agents and enrolment tokens; rotate and revoke tokens.

Every call takes effect at once on the controller it reaches and within `auth_cache_s` (2 s) on the
others sharing its database: no restart. A token is returned once, when it is issued or rotated;
the controller keeps only its hash. The admin token comes from the argument, else
EDGECOMPRESS_FARM_ADMIN_TOKEN, else the file named by EDGECOMPRESS_FARM_ADMIN_TOKEN_FILE.
"""

from __future__ import annotations

from typing import Any

from edgecompress.farm import wire
from edgecompress.farm.client import FarmClient, token_from_env

ADMIN_TOKEN_ENV = "EDGECOMPRESS_FARM_ADMIN_TOKEN"
KINDS = wire.ADMIN_PATHS


class FarmAdmin(FarmClient):
    """Admin calls (the admin may also do everything a client does, over all clients' jobs)."""

    def _token(self, token: str | None) -> str:
        return token_from_env(token, ADMIN_TOKEN_ENV, "admin")

    def add_client(self, name: str) -> dict[str, Any]:
        return self._request("POST", "/v1/admin/clients", json=wire.body(wire.ClientSpec(name=name))).json()

    def add_agent(self, agent_id: str, device_classes: list[str], emulated: bool = False) -> dict[str, Any]:
        body = wire.body(
            wire.AgentSpec(agent_id=agent_id, device_classes=list(device_classes), emulated=emulated)
        )
        return self._request("POST", "/v1/admin/agents", json=body).json()

    def add_enrolment_token(
        self, name: str, device_classes: list[str], emulated: bool = False, expires_in_s: float | None = None
    ) -> dict[str, Any]:
        spec = wire.EnrolmentSpec(
            name=name, device_classes=list(device_classes), emulated=emulated, expires_in_s=expires_in_s
        )
        body = wire.body(spec)
        return self._request("POST", "/v1/admin/enrolment-tokens", json=body).json()

    def rotate(self, kind: str, name: str) -> dict[str, Any]:
        """A new token for `name` (kind: client, agent or enrolment); the old one stops working."""
        return self._request("POST", f"/v1/admin/{KINDS[kind]}/{name}/rotate").json()

    def revoke(self, kind: str, name: str) -> dict[str, Any]:
        """Revoke `name`'s token; a revoked agent's leased jobs go back to the queue."""
        return self._request("DELETE", f"/v1/admin/{KINDS[kind]}/{name}").json()

    def readmit(self, kind: str, name: str) -> dict[str, Any]:
        """Lift the revocation of `name` so that it may enrol again through an enrolment token."""
        return self._request("POST", f"/v1/admin/{KINDS[kind]}/{name}/readmit").json()

    def identities(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/admin/identities").json()
