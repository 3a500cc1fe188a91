"""The read-only web dashboard: pages, a JSON API and Prometheus ``/metrics``, built from KV watches, the
logs stream and the metrics snapshots components publish (never by asking the controller).

``view`` holds the records (one dict per bucket, kept current by ``feeds``); ``pages`` and ``api`` render
them; ``app`` routes HTTP; ``server.Dashboard`` runs it all. See docs/dashboard.md.
"""

from fluster.dashboard.server import Dashboard, DashboardSettings

__all__ = ["Dashboard", "DashboardSettings"]
