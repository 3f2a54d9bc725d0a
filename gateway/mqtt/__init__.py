"""MQTT concerns shared by the MQTT source and the MQTT outputs.

security  secure         TLS and credentials for a paho client; never a plaintext fallback
topics    topic_problem  MQTT's topic rules, checked before anything is published
"""
