"""Liquid Gateway: an edge agent that reads sensors, scores every reading with a liquid
(CfC) network, keeps alerts in SQLite and forwards them upstream over MQTT."""

__version__ = "0.1.0"
