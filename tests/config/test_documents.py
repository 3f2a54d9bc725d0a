"""``include:`` files and ``${ENV}`` substitution (#14 item 12): merged in a defined order,
every error named by file and line, every bound held, no substituted value echoed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import load_config, parse_config
from gateway.config.documents import MAX_CONFIG_BYTES, MAX_INCLUDE_DEPTH, MAX_INCLUDE_FILES
from gateway.errors import ConfigError

runner = CliRunner()


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder / next(iter(files))


def _issues(file: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(file)
    return "\n".join(str(i) for i in info.value.issues)


# --- include ---------------------------------------------------------------------------------


def test_includes_merge_in_name_order(tmp_path: Path) -> None:
    main = _write(
        tmp_path,
        {
            "gw.yaml": "gateway: {id: main}\ninclude: [conf.d/*.yaml]\n"
            "detector: {threshold: 0.8, warmup: 50}\nsources: [{type: simulate, name: a}]\n",
            # Not in the order written, and with files the pattern must not pick up.
            "conf.d/20-last.yaml": "detector: {threshold: 0.85}\n"
            "sources: [{type: simulate, name: c}]\nassets: {pump: [c.x]}\n",
            "conf.d/10-first.yaml": "detector: {threshold: 0.9}\n"
            "sources: [{type: simulate, name: b}]\nassets: {pump: [b.x]}\n",
            "conf.d/10-first.yaml~": "gateway: {id: editor-backup}\n",
            "conf.d/.hidden.yaml": "gateway: {id: hidden}\n",
        },
    )
    config = load_config(main)
    assert [s.name for s in config.sources] == ["a", "b", "c"]  # lists are appended
    assert config.detector.threshold == 0.85  # a later file's value replaces an earlier one
    assert config.detector.warmup == 50  # mappings merge key by key
    assert config.gateway.id == "main"
    assert config.assets == {"pump": ["b.x", "c.x"]}


def test_errors_in_an_included_file_name_it_and_its_line(tmp_path: Path) -> None:
    main = _write(
        tmp_path,
        {
            "gw.yaml": "include: conf.d/*.yaml\nsources: [{type: simulate, name: a}]\n",
            "conf.d/a.yaml": "# one sensor\nsources:\n  - type: serial\n    name: b\n"
            "    port: loop://\n    fields: [x]\n    baudrate: fast\n    colour: blue\n",
            "conf.d/b.yaml": "gateway:\n  id: a\n  id: b\n",
            "conf.d/c.yaml": "detector: [unclosed\n",
        },
    )
    text = _issues(main)
    assert f"{tmp_path / 'conf.d/c.yaml'}:2: invalid YAML" in text, text
    main.write_text(main.read_text())
    (tmp_path / "conf.d/c.yaml").unlink()
    text = _issues(main)
    inc = tmp_path / "conf.d" / "a.yaml"
    # The file and line are the included file's; the key path is the merged config's.
    assert f"{inc}:7: sources[1].baudrate:" in text, text
    assert f"{inc}:8: sources[1].colour: unknown key" in text, text
    assert f"{tmp_path / 'conf.d/b.yaml'}:3: gateway.id: duplicate key" in text, text
    result = runner.invoke(app, ["config", "validate", str(main)])
    assert result.exit_code == 78 and f"{inc}:8:" in result.output
    (tmp_path / "conf.d/b.yaml").write_text("gateway: {id: b}\n")
    inc.write_text("sources: [{type: simulate, name: b}]\n")
    result = runner.invoke(app, ["config", "validate", str(main)])
    assert "ok (2 sources, upstream none, 2 included files)" in result.output, result.output


def test_a_missing_include_is_an_error_and_an_empty_conf_d_is_not(tmp_path: Path) -> None:
    main = _write(tmp_path, {"gw.yaml": "gateway: {id: gw}\ninclude:\n  - conf.d/*.yaml\n"})
    assert load_config(main).gateway.id == "gw"
    main.write_text("gateway: {id: gw}\ninclude:\n#  - conf.d/*.yaml\n")
    assert load_config(main).gateway.id == "gw"
    main.write_text("gateway: {id: gw}\ninclude:\n  - conf.d/*.yaml\n  - site.yaml\n")
    assert f"{main}:4: include[1]: cannot read {tmp_path / 'site.yaml'}: No such file" in (
        _issues(main)
    )
    main.write_text("include: [{a: b}]\n")
    assert f"{main}:1: include[0]: must be a file name or a glob pattern" in _issues(main)


def test_include_cycles_and_repeats_are_refused(tmp_path: Path) -> None:
    main = _write(
        tmp_path,
        {
            "gw.yaml": "include: [a.yaml]\n",
            "a.yaml": "include: [b.yaml]\n",
            "b.yaml": "gateway: {id: b}\ninclude: [a.yaml]\n",
        },
    )
    text = _issues(main)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert f"{b}:2: include[0]: {a} includes itself: {a} -> {b} -> {a}" in text, text
    main.write_text("include: ['*.yaml']\n")  # the main file is in its own pattern
    (tmp_path / "b.yaml").write_text("gateway: {id: b}\n")
    assert f"{main} includes itself" in _issues(main)
    main.write_text("include: [b.yaml, '?.yaml']\n")
    assert f"{b} is already included (from {main}:1)" in _issues(main)


def test_include_depth_count_and_size_are_bounded(tmp_path: Path) -> None:
    depth = MAX_INCLUDE_DEPTH + 1
    files = {f"{n}.yaml": f"include: [{n + 1}.yaml]\n" for n in range(depth)}
    files[f"{depth}.yaml"] = "gateway: {id: deep}\n"
    main = _write(tmp_path / "deep", files)
    assert f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels" in _issues(main)

    many = {"gw.yaml": "include: [conf.d/*.yaml]\n"}
    many |= {f"conf.d/{n:03}.yaml": "{}\n" for n in range(MAX_INCLUDE_FILES + 1)}
    main = _write(tmp_path / "many", many)
    assert f"more than {MAX_INCLUDE_FILES} included files" in _issues(main)

    half = "# padding\n" * (MAX_CONFIG_BYTES // 20 + 10)
    main = _write(tmp_path / "big", {"gw.yaml": "include: [a.yaml]\n" + half, "a.yaml": half})
    assert f"the config and its includes are larger than {MAX_CONFIG_BYTES} bytes" in (
        _issues(main)
    )


def test_substituted_values_count_against_the_size_bound(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GW_BIG", "x" * 100_000)
    refs = "".join(f"  s{n}: ${{GW_BIG}}\n" for n in range(MAX_CONFIG_BYTES // 100_000 + 1))
    file = _write(tmp_path, {"gw.yaml": f"assets:\n{refs}"})
    text = _issues(file)
    assert f"with ${{...}} substituted, the config is larger than {MAX_CONFIG_BYTES}" in text
    assert "xxxx" not in text


def test_an_included_file_must_be_a_mapping(tmp_path: Path) -> None:
    main = _write(tmp_path, {"gw.yaml": "include: [a.yaml]\n", "a.yaml": "\n- just\n- a list\n"})
    assert f"{tmp_path / 'a.yaml'}:2: must be a mapping of sections" in _issues(main)


def test_show_merges_includes_into_one_file_that_loads_alone(tmp_path: Path) -> None:
    main = _write(
        tmp_path / "etc",
        {
            "gw.yaml": "include: [conf.d/*.yaml]\ngateway: {data_dir: state}\n",
            "conf.d/a.yaml": "sources: [{type: simulate, name: a, fault_every: 2m}]\n",
        },
    )
    shown = runner.invoke(app, ["config", "show", "-c", str(main)])
    assert shown.exit_code == 0, shown.output
    assert "\ninclude:" not in shown.output
    out = tmp_path / "shown.yaml"
    out.write_text(shown.output)
    assert load_config(out) == load_config(main)
    assert runner.invoke(app, ["config", "validate", str(out)]).exit_code == 0


# --- ${ENV} ----------------------------------------------------------------------------------


def test_environment_references_are_substituted_and_typed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GW_ID", "station-7")
    monkeypatch.setenv("GW_PORT", "8883")
    monkeypatch.setenv("GW_EMPTY", "")
    monkeypatch.setenv("GW_TRICK", "${GW_ID}")
    monkeypatch.delenv("GW_UNSET", raising=False)
    config = parse_config(
        "gateway: {id: '${GW_ID}', data_dir: '/srv/${GW_ID}/data'}\n"
        "upstream:\n"
        "  broker:\n"
        "    host: '${GW_UNSET:-broker.local}'\n"
        "    port: ${GW_PORT}\n"  # unquoted in a block: in {flow} style, quote it
        "    username: '${GW_TRICK}'\n"
        "    client_id: !!str ${GW_PORT}\n"  # an explicit tag stays
        "  topic_prefix: ${GW_EMPTY:-plant}\n"
        "  qos: ${GW_UNSET:-2}\n",
        "gw.yaml",
    )
    assert config.gateway.id == "station-7"
    assert config.gateway.data_dir == Path("/srv/station-7/data")
    assert config.upstream is not None
    broker = config.upstream.broker
    assert broker.host == "broker.local"  # unset: the default
    assert broker.port == 8883
    assert config.upstream.topic_prefix == "plant"  # empty: the default
    assert config.upstream.qos == 2  # read as the number it spells
    # A value is substituted once, never read again for references; $${ is a literal ${.
    assert broker.username == "${GW_ID}"
    assert broker.client_id == "8883"
    with pytest.raises(ConfigError, match="password_env: must name an environment variable"):
        parse_config("upstream: {broker: {host: h, password_env: '$${GW_ID}'}}\n")


def test_a_missing_or_malformed_reference_names_file_line_and_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GW_NOPE", raising=False)
    file = tmp_path / "gw.yaml"
    file.write_text(
        "gateway:\n  id: ${GW_NOPE}\n  data_dir: ${lower}\nmodel: {path: '${GW_NOPE'}\n"
        "metrics: {listen: '${A:-${B}}'}\n"
    )
    text = _issues(file)
    assert (
        f"{file}:2: gateway.id: environment variable GW_NOPE is not set "
        "(write ${GW_NOPE:-default} for a default)"
    ) in text, text
    assert f"{file}:3: gateway.data_dir: ${{lower}} must name an environment variable" in text
    assert f"{file}:4: model.path: '${{' without its closing '}}'" in text, text
    assert f"{file}:5: metrics.listen: ${{A:-...}}: a default cannot hold another" in text, text
    result = runner.invoke(app, ["config", "validate", str(file)])
    assert result.exit_code == 78 and "GW_NOPE is not set" in result.output


def test_a_substituted_value_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GW_TOKEN", "hunter2 secret")
    file = tmp_path / "gw.yaml"
    for broker, expected in (
        ("{host: h, password: '${GW_TOKEN}'}", "secrets may not be written in the config"),
        ("{host: h, password_file: '${GW_TOKEN}'}", f"cannot read {tmp_path}/${{GW_TOKEN}}"),
    ):
        file.write_text(f"gateway: {{id: '${{GW_TOKEN}}'}}\nupstream:\n  broker: {broker}\n")
        result = runner.invoke(app, ["config", "validate", str(file)])
        for output in (_issues(file), result.output):
            assert "hunter2" not in output, output
            assert "gateway.id: '${GW_TOKEN}' is not a valid name" in output, output
            assert expected in output, output


def test_includes_may_be_named_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GW_SITE", "north")
    main = _write(
        tmp_path,
        {
            "gw.yaml": "include: ['sites/${GW_SITE}.yaml']\n",
            "sites/north.yaml": "gateway: {id: n}\n",
        },
    )
    assert load_config(main).gateway.id == "n"


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_a_quoted_reference_is_replaced_by_the_value_exactly(value: str) -> None:
    """Whatever the variable holds ($, ${...}, quotes, newlines) is the value, unchanged:
    never read for references again, never parsed as YAML."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GW_ANY", value)
        config = parse_config("upstream:\n  broker:\n    host: h\n    username: '${GW_ANY}'\n")
    assert config.upstream is not None
    assert config.upstream.broker.username == value
