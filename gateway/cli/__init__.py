"""The operator's command line (``liquid-gateway``, also ``python -m gateway``).

app   the Typer application: run, alerts, events, status, streams, db, config, model, replay
plot  a stream's recent readings with its expected value and band, as a PNG
logs  the log lines of `run` and `test` on stderr (journald priorities under systemd)
"""
