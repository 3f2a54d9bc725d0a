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
