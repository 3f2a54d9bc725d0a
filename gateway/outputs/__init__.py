"""Where alerts and events leave the gateway, read from the store's outbox.

forwarder      Forwarder  the outbox -> upstream MQTT thread (at least once, PUBACK-checked)
homeassistant  Announcer  opt-in Home Assistant MQTT discovery on the upstream broker
"""
