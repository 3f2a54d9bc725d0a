"""``outputs:`` (#15 item 2): a list of typed outputs from one registry, ``upstream:`` kept as
sugar for the MQTT output named ``upstream``, names checked whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import UPSTREAM_OUTPUT, ConfigError, parse_config
from gateway.config.render import sample_text, show_text


def test_upstream_is_the_mqtt_output_named_upstream_and_outputs_follow_it() -> None:
    config = parse_config(
        "upstream: {broker: {host: core.example}, topic_prefix: plant}\n"
        "outputs:\n"
        "  - {type: mqtt, name: site-broker, broker: {host: 10.0.0.2}, qos: 2}\n"
    )
    first, second = config.delivery_outputs()
    assert (first.type, first.name, first.broker.host) == ("mqtt", UPSTREAM_OUTPUT, "core.example")
    assert first.topic_prefix == "plant"
    assert (second.name, second.broker.host, second.qos) == ("site-broker", "10.0.0.2", 2)


def test_an_old_config_has_exactly_the_one_output_it_had() -> None:
    assert [o.name for o in parse_config("upstream: {broker: {}}\n").delivery_outputs()] == [
        "upstream"
    ]
    assert parse_config("{}\n").delivery_outputs() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "upstream: {broker: {}}\noutputs: [{type: mqtt, name: upstream, broker: {}}]\n",
            "output names must be unique",
        ),
        (
            "outputs: [{type: mqtt, name: a, broker: {}}, {type: mqtt, name: a, broker: {}}]\n",
            "output names must be unique",
        ),
        ('outputs: [{type: mqtt, name: "ok\\n", broker: {}}]\n', "outputs[0].name"),
        ("outputs: [{type: mqtt, name: a/b, broker: {}}]\n", "outputs[0].name"),
        ("outputs: [{type: kafka, name: a}]\n", "outputs[0]"),
    ],
)
def test_bad_outputs_are_refused_with_their_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert message in str(caught.value)


def test_show_and_sample_carry_outputs_and_load_again() -> None:
    config = parse_config("outputs: [{type: mqtt, name: site, broker: {host: h}}]\n")
    assert parse_config(show_text(config)) == config
    assert "outputs:" in sample_text()
    assert parse_config(sample_text(examples=True)).outputs


def test_every_output_prints_type_and_name_first_though_its_keys_are_shared() -> None:
    """The HTTP outputs share their time-out and back-off keys through a base class, and
    mqtt its keys with upstream; pydantic puts inherited keys first, the renderer does not."""
    from gateway.config.render import field_order
    from gateway.config.schema import (
        AlertmanagerOutputSection,
        MqttOutputSection,
        WebhookOutputSection,
        _HttpOutputSection,
    )

    shared = list(_HttpOutputSection.model_fields)
    assert len(shared) == 6
    for model in (WebhookOutputSection, AlertmanagerOutputSection):
        assert list(model.model_fields)[:6] == shared  # pydantic's order: inherited first
        order = field_order(model)
        assert order[:3] == ["type", "name", "url"] and order[-6:] == shared
    assert field_order(MqttOutputSection)[:3] == ["type", "name", "broker"]
    config = parse_config(
        "outputs:\n"
        "  - {type: mqtt, name: site, broker: {host: h}}\n"
        "  - {type: webhook, name: hook, url: 'http://127.0.0.1:1/x'}\n"
        "  - {type: alertmanager, name: am, url: 'http://127.0.0.1:2'}\n"
    )
    shown = show_text(config)
    items = [line for line in shown.splitlines() if line.startswith("- type: ")]
    assert items == ["- type: mqtt", "- type: webhook", "- type: alertmanager"]
    for kind in ("mqtt", "webhook", "alertmanager"):
        after = shown.split(f"- type: {kind}\n", 1)[1]
        assert after.startswith("  name: ")
        assert f"# - type: {kind}\n#   # the output's name" in sample_text()


@pytest.mark.parametrize("kind", ["webhook", "alertmanager"])
def test_the_shared_http_checks_hold_for_each_http_output(kind: str) -> None:
    def load(fields: str) -> None:
        parse_config(f"outputs: [{{type: {kind}, name: o, {fields}}}]\n")

    load("url: 'http://127.0.0.1:1/'")
    with pytest.raises(ConfigError, match="http:// or https://"):
        load("url: 'ftp://127.0.0.1/'")
    with pytest.raises(ConfigError, match="must not hold credentials"):
        load("url: 'http://u:p@127.0.0.1/'")
    with pytest.raises(ConfigError, match="reconnect_min_delay <= reconnect_max_delay"):
        load("url: 'http://127.0.0.1:1/', reconnect_min_delay: 2m, reconnect_max_delay: 1m")
    with pytest.raises(ConfigError, match="retry_min_delay <= retry_max_delay"):
        load("url: 'http://127.0.0.1:1/', retry_min_delay: 10m")


def test_validate_names_a_webhook_secret_file_that_does_not_exist(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gateway.cli.app import app

    file = tmp_path / "gw.yaml"
    file.write_text(
        f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n"
        "metrics: {listen: null}\n"
        "outputs:\n"
        "  - {type: webhook, name: hook, url: 'http://127.0.0.1:9/x', secret_file: hook.key}\n"
    )
    result = CliRunner().invoke(app, ["config", "validate", str(file)])
    expected = f"outputs[0].secret_file: {tmp_path / 'hook.key'} does not exist"
    assert result.exit_code == 78 and expected in result.output, result.output
    (tmp_path / "hook.key").write_text("k")
    result = CliRunner().invoke(app, ["config", "validate", str(file)])
    assert result.exit_code == 0, result.output
