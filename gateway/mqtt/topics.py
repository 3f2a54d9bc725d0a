"""MQTT topic names the gateway publishes to, checked before anything is published.

A broker that receives a malformed topic does not refuse the one message: it drops the whole
connection (Mosquitto: "malformed packet"). So a topic is checked here, on our side, and a
message whose topic fails is quarantined instead of sent; otherwise the forwarder would re-send
it first after every reconnect and nothing behind it would ever be delivered.

The rules are MQTT's (3.1.1 section 4.7, 5.0 section 4.7) plus what brokers enforce: at least
one character, at most 65,535 bytes of UTF-8, no wildcards (``+``, ``#``) in a name that is
published to, no U+0000, no other control characters (Mosquitto rejects U+0001-U+001F and
U+007F-U+009F as malformed UTF-8), no lone surrogates, and no leading ``$`` (reserved for the
broker). Every level we build from a gateway, source or stream name is also a valid name
(``gateway.config.is_name``), which is stricter still.
"""

from __future__ import annotations

import re

MAX_TOPIC_BYTES = 65_535
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f+#\ud800-\udfff]")


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to, or None when it can."""
    if not topic:
        return "the topic is empty"
    bad = _FORBIDDEN.search(topic)
    if bad is not None:
        return f"the topic contains {bad.group()!r} at position {bad.start()}"
    if topic.startswith("$"):
        return "topics starting with '$' are reserved for the broker"
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"the topic is longer than {MAX_TOPIC_BYTES} bytes"
    return None


def check_topic(topic: str) -> str:
    """``topic`` itself, or ValueError naming what is wrong with it."""
    problem = topic_problem(topic)
    if problem is not None:
        raise ValueError(f"{topic[:200]!r} is not a topic we can publish to: {problem}")
    return topic
