"""Observability for fluster's components: an in-process metrics registry (``registry``), the metric names
(``names``), the loop that publishes snapshots over NATS (``publish``), and per-job usage sampling
(``usage``, ``proc``). The dashboard (``fluster.dashboard``) serves what they publish."""
