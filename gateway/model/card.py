"""The model card: the JSON written next to each ``.tflite`` by ``tools/train_cfc.py``.

The gateway trusts a model file only as far as its card vouches for it: the card pins the file's
SHA-256 (a mismatch means a corrupt file or a card that belongs to another model) and the tensor
contract (names and shapes the runtime checks the interpreter against). The card is also what
``model info`` shows and where alerts get the model id from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ModelError

log = logging.getLogger(__name__)

INPUT_NAMES = ("x", "h", "dt")
OUTPUT_NAMES = ("pred", "log_var", "h_new")
MAX_CARD_BYTES = 1_000_000


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # -1 = dynamic (the batch axis)
    dtype: str


@dataclass(frozen=True)
class ModelCard:
    path: Path
    name: str
    version: str
    created: str
    file: str
    sha256: str
    size_bytes: int
    hidden_size: int
    features: int
    backbone_units: int
    parameters: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    weights_file: str | None
    weights_sha256: str | None
    raw: Mapping[str, Any]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return expected_shapes(self.features, self.hidden_size)


def expected_shapes(features: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the step contract, batch axis as -1 (dynamic)."""
    f, h = features, hidden
    return {"x": (-1, f), "h": (-1, h), "dt": (-1, 1),
            "pred": (-1, f), "log_var": (-1, f), "h_new": (-1, h)}  # fmt: skip


def card_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _tensors(raw: Any, names: tuple[str, ...], where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list):
        raise ModelError(f"{where}: expected a list of tensors")
    specs = []
    for item in raw:
        if not isinstance(item, dict):
            raise ModelError(f"{where}: each tensor needs name, shape and dtype")
        try:
            specs.append(
                TensorSpec(
                    str(item["name"]), tuple(int(s) for s in item["shape"]), str(item["dtype"])
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: malformed tensor entry {item!r}") from exc
    found = sorted(s.name for s in specs)
    if found != sorted(names):
        raise ModelError(f"{where}: tensors {found}, expected {sorted(names)}")
    return tuple(specs)


def load_card(path: Path) -> ModelCard:
    """Read and validate a card; every problem is a ``ModelError`` naming the file."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise ModelError(f"model card {path} is larger than {MAX_CARD_BYTES} bytes")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"model card {path} not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {path} is unreadable: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"model card {path}: expected a JSON object")
    try:
        tensors = raw["tensors"]
        weights = raw.get("weights") or {}
        card = ModelCard(
            path=path,
            name=str(raw["name"]),
            version=str(raw["version"]),
            created=str(raw.get("created", "")),
            file=str(raw["file"]),
            sha256=str(raw["sha256"]).lower(),
            size_bytes=int(raw["size_bytes"]),
            hidden_size=int(raw["hidden_size"]),
            features=int(raw["features"]),
            backbone_units=int(raw.get("backbone_units", 0)),
            parameters=int(raw.get("parameters", 0)),
            inputs=_tensors(tensors["inputs"], INPUT_NAMES, f"model card {path}: inputs"),
            outputs=_tensors(tensors["outputs"], OUTPUT_NAMES, f"model card {path}: outputs"),
            ops=tuple(str(o) for o in raw.get("ops", ())),
            weights_file=str(weights["file"]) if "file" in weights else None,
            weights_sha256=str(weights["sha256"]).lower() if "sha256" in weights else None,
            raw=raw,
        )
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"model card {path}: missing or malformed field {exc}") from exc
    if card.hidden_size < 1 or card.features < 1:
        raise ModelError(f"model card {path}: hidden_size and features must be positive")
    expected = card.expected_shapes()
    for spec in card.inputs + card.outputs:
        if spec.shape != expected[spec.name] or spec.dtype != "float32":
            raise ModelError(
                f"model card {path}: tensor {spec.name} is {spec.dtype}{list(spec.shape)}, "
                f"expected float32{list(expected[spec.name])}"
            )
    return card


def verify_file(card: ModelCard, path: Path, sha256: str | None = None) -> str:
    """Check ``path`` against the card's hash (model file or weights); returns the file's hash."""
    is_weights = path.name == card.weights_file
    expected = card.weights_sha256 if is_weights else card.sha256
    actual = sha256 or file_sha256(path)
    if expected is None:
        log.warning("model card %s pins no hash for %s", card.path, path.name)
    elif actual != expected:
        raise ModelError(
            f"{'weights' if is_weights else 'model'} file {path}: sha256 {actual[:12]}... does not "
            f"match its card {card.path} ({expected[:12]}...): the file is corrupt or the card "
            "belongs to another model"
        )
    return actual
