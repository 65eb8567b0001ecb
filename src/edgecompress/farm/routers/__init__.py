"""The controller's routes, one router per resource over the injected `FarmState` (`deps`).

`ROUTERS` is what `controller.create_app` serves; `docs` is added only when the config asks for it.
"""

from edgecompress.farm.routers import admin, agents, blobs, health, jobs

# Claims and results are most requests: their router is matched first (no other route matches their
# method and path, so the order changes nothing else).
ROUTERS = (agents.router, health.router, admin.router, agents.enrolment, blobs.router, jobs.router)
