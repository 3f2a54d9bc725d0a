"""Running the gateway as a service: the daemon that wires the stages, and what it reports.

daemon    run_gateway    threads, signals (SIGTERM drain, SIGHUP reload), status snapshots
metrics   MetricsServer  the Prometheus endpoint
sdnotify  Notifier       systemd readiness and watchdog notifications
liveness  still_running  is the daemon behind a status snapshot alive (a full disk included)
"""
