"""gateway/config/locate.py finds the database where the full loader says it is, or leaves
the answer to the full loader: never a second answer that disagrees."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import GatewaySection, load_config
from gateway.config.locate import GATEWAY_KEYS, DatabaseLocation, locate_database
from gateway.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
runner = CliRunner()


def _agrees(path: Path) -> DatabaseLocation:
    found = locate_database(path)
    config = load_config(path)
    assert found == DatabaseLocation(config.gateway.id, config.database_path), path
    return found


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_agrees_with_the_full_loader_on_every_example_config(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("mqtt-local", "mqtt-upstream", "opcua-password"):  # the production example's
        (tmp_path / name).write_text("s3cret-value\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    _agrees(path)


@pytest.mark.parametrize(
    "text",
    [
        "sources: [{type: simulate}]\n",  # no gateway section: the defaults
        "gateway:\nsources: [{type: simulate}]\n",  # an empty one: the same
        "gateway: {id: line-3, data_dir: data}\n",  # relative to the config's folder
        "gateway: {data_dir: ~/gw, log_level: debug}\n",
        "gateway: {data_dir: '${GW_DATA}/x', id: '${GW_ID:-dflt}'}\n",
        "gateway: {data_dir: !!str 2026}\n",
        "gateway: {data_dir: ''}\n",  # Path(''): the config's folder
        "include: [conf.d/*.yaml]\ngateway: {id: main}\n",  # an included file sets data_dir
        "",  # an empty file is the default config
    ],
)
def test_agrees_with_the_full_loader(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_DATA", str(tmp_path / "from-env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.yaml").write_text("gateway: {data_dir: /srv/gw}\n")
    file = tmp_path / "gw.yaml"
    file.write_text(text)
    monkeypatch.chdir(tmp_path / "conf.d")  # relative means the config's folder, not the cwd
    _agrees(file)


@pytest.mark.parametrize(
    "text",
    [
        "gateway: {id: 'has space'}\n",
        "gateway: {id: 42}\n",
        "gateway: {data_dir: 7}\n",
        "gateway: {data_dir: [a]}\n",
        "gateway: {colour: blue}\n",
        "gateway: {id: a}\ngateway: {id: b}\n",
        "gateway: {id: a, id: b}\n",
        "gateway: [a]\n",
        "- a list\n",
        "gateway: {id: '${GW_UNSET_VARIABLE}'}\n",
        "gateway: {id: [unclosed\n",
        "include: missing.yaml\n",
    ],
)
def test_leaves_what_it_cannot_tell_simply_to_the_full_loader(text: str, tmp_path: Path) -> None:
    """Each of these is refused by the full loader; the light path must not answer."""
    file = tmp_path / "gw.yaml"
    file.write_text(text)
    assert locate_database(file) is None
    with pytest.raises(ConfigError):
        load_config(file)


def test_an_unreadable_file_is_left_to_the_full_loader(tmp_path: Path) -> None:
    assert locate_database(tmp_path / "absent.yaml") is None
    assert locate_database(tmp_path) is None  # a folder


def test_knows_every_key_of_the_gateway_section() -> None:
    assert set(GatewaySection.model_fields) == GATEWAY_KEYS


def test_a_query_command_reports_a_broken_gateway_section_as_the_full_loader_does(
    tmp_path: Path,
) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text(f"gateway: {{data_dir: {tmp_path}, colour: blue}}\n")
    for args in (["alerts", "list"], ["status"], ["streams"], ["events", "list"]):
        result = runner.invoke(app, [*args, "-c", str(file)])
        assert result.exit_code == 78, result.output
        assert f"{file}:1: gateway.colour: unknown key" in result.output


def test_a_query_command_reads_the_database_of_a_config_broken_elsewhere(
    tmp_path: Path,
) -> None:
    """The query commands need only the database: a source the daemon refuses (it exits 78
    on start) does not hide the alerts it stored. `config validate` names the fault."""
    from gateway.store import Store

    with Store.open(tmp_path / "gateway.db", gateway_id="gw"):
        pass
    file = tmp_path / "gw.yaml"
    file.write_text(f"gateway: {{data_dir: {tmp_path}}}\nsources: [{{type: nope}}]\n")
    result = runner.invoke(app, ["alerts", "list", "-c", str(file)])
    assert result.exit_code == 0 and "(none)" in result.output, result.output
    assert runner.invoke(app, ["config", "validate", str(file)]).exit_code == 78


def test_every_name_gateway_config_exports_resolves() -> None:
    """gateway.config re-exports lazily: each name in __all__ is found where it is defined,
    and the names imported for type checkers are the same list."""
    import ast

    import gateway.config as package

    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError):
        _ = package.no_such_name
    tree = ast.parse(Path(package.__file__).read_text())
    checked = next(n for n in tree.body if isinstance(n, ast.If))  # if TYPE_CHECKING:
    typed = {a.name for n in checked.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert typed == set(package.__all__)
