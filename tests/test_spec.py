"""spec.load_spec: the shipped specs load with the right values; schema errors become one located
line each; and the job schema itself stays editor-friendly (a description on every key)."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runner.endpoints import schemas_dir
from runner.errors import SpecErrors
from runner.models import Execution, Location, Sample
from runner.spec.load import load_spec
from runner.spec.yamlsource import load_yaml

SPECS = Path(__file__).resolve().parent.parent / "specs"
HEAD = "version: 1\nendpoint: fal-ai/flux-1/dev/image-to-image\n"


def _write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    return [f"{e.line}:{e.col}: {e.message}" for e in info.value.errors]


def test_quickstart_values() -> None:
    spec = load_spec(SPECS / "quickstart.yaml")
    assert spec.version == 1 and spec.name == "quickstart"
    assert spec.endpoint == "fal-ai/flux-1/dev/image-to-image"
    assert spec.backend == "local"
    assert spec.base_dir == SPECS
    assert spec.output == SPECS / "runs" / "quickstart"  # default: runs/<stem> beside the spec
    assert spec.defaults["image_url"] == "images/circle.png"
    assert spec.matrix == {"style": ["watercolor painting", "pencil sketch"]}
    assert spec.sample is None and spec.max_requests == 10_000
    assert spec.execution == Execution()
    assert spec.sha256 == hashlib.sha256((SPECS / "quickstart.yaml").read_bytes()).hexdigest()


def test_dataset_and_sweep_values() -> None:
    data = load_spec(SPECS / "dataset.yaml")
    assert data.sample == Sample(24, 1) and data.max_requests == 100
    assert data.matrix["seed"] == {"range": [0, 99]}
    assert data.include[0]["seed"] == 1000
    assert data.execution.rate == 5.0 and data.execution.concurrency == 8
    sweep = load_spec(SPECS / "sweep.yaml")
    assert sweep.output == SPECS / "runs" / "sweep"
    assert list(sweep.matrix) == ["image_url", "strength", "guidance_scale"]  # YAML order kept
    assert sweep.execution.timeout == 120.0 and isinstance(sweep.execution.timeout, float)


def test_output_resolves_beside_the_spec_and_out_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", HEAD + "output: ../results\n")
    monkeypatch.chdir(tmp_path)
    assert load_spec("sub/job.yaml").output == tmp_path / "results"
    assert load_spec(path, out=Path("elsewhere")).output == tmp_path / "elsewhere"


def test_execution_block(tmp_path: Path) -> None:
    text = (
        HEAD + "execution: {concurrency: 2, rate: 0.5, retries: 0, timeout: 30,\n"
        "            queue_timeout: 5, mode: sync}\n"
    )
    ex = load_spec(_write(tmp_path, text)).execution
    assert ex == Execution(
        concurrency=2, rate=0.5, retries=0, timeout=30.0, queue_timeout=5.0, mode="sync"
    )


def test_numbers_load_in_the_schema_types(tmp_path: Path) -> None:
    # YAML's 2.0 is a valid integer and 30 a valid number: each becomes the type its field holds
    text = (
        HEAD + "sample: {n: 2.0, seed: 1.0}\nlimits: {max_requests: 100.0, max_usd: 3}\n"
        "execution: {concurrency: 2.0, retries: 1.0, timeout: 30, rate: 2}\n"
    )
    spec = load_spec(_write(tmp_path, text))
    ex = spec.execution
    assert spec.sample is not None
    got = (spec.sample.n, spec.sample.seed, spec.max_requests, ex.concurrency, ex.retries)
    assert [type(v) for v in got] == [int] * 5 and got == (2, 1, 100, 2, 1)
    assert [type(v) for v in (ex.timeout, ex.rate, spec.max_usd)] == [float] * 3


def test_locate_points_at_keys(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, HEAD + "matrix:\n  seed: [1, 2]\n"))
    assert spec.locate(("matrix", "seed")) == Location(4, 3)
    assert spec.locate(("matrix", "seed", 1)) == Location(4, 13)
    assert spec.locate(("matrix", "seed", 9)) == Location(4, 3)


def test_all_schema_errors_collected_and_sorted(tmp_path: Path) -> None:
    text = HEAD + "execution:\n  retries: -1\n  concurrency: 0\nbackend: cloud\nmatrx: {}\n"
    assert _errors(_write(tmp_path, text)) == [
        "4:3: 'retries' must be at least 0, got -1",
        "5:3: 'concurrency' must be at least 1, got 0",
        "6:1: 'backend' must be one of local, fal, got 'cloud'",
        "7:1: unknown key 'matrx' (did you mean 'matrix'?)",
    ]


def test_unknown_key_without_a_close_match_lists_the_allowed_ones(tmp_path: Path) -> None:
    [line] = _errors(_write(tmp_path, HEAD + "execution: {zzz: 1}\n"))
    assert line == (
        "3:13: unknown key 'zzz' in 'execution' (expected one of: concurrency, "
        "rate, retries, timeout, queue_timeout, mode, priority, store_io, allow_fallbacks)"
    )


def test_enum_did_you_mean(tmp_path: Path) -> None:
    [line] = _errors(_write(tmp_path, HEAD + "backend: fall\n"))
    assert line == "3:1: 'backend' must be one of local, fal, got 'fall' (did you mean 'fal'?)"


def test_unsupported_version_is_the_only_error(tmp_path: Path) -> None:
    assert _errors(_write(tmp_path, "version: 3\nendpoint: nope\nmatrx: 1\n")) == [
        "1:1: unsupported version 3 (this runner reads version 1)"
    ]


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    [line] = _errors(_write(tmp_path, HEAD + "execution: {concurrency: true}\n"))
    assert line == "3:13: 'concurrency' must be an integer, got true"


def test_file_errors(tmp_path: Path) -> None:
    assert _errors(tmp_path) == ["1:1: is a folder, not a spec file"]
    assert _errors(tmp_path / "missing.yaml") == ["1:1: file not found"]
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"version: 1\n\xff\xfe\n")
    assert _errors(junk) == ["2:1: not a text file (invalid UTF-8)"]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + HEAD.encode())
    assert load_spec(path).version == 1


# --- the schema file itself

SCHEMA: dict[str, Any] = json.loads((schemas_dir() / "job.schema.json").read_text())


def _objects(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((where, node))
        for key, value in node.items():
            found += _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects(value, f"{where}/{i}")
    return found


def _defaults(node: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every `default` the schema writes for a spec key, by the key's path."""
    found: dict[tuple[str, ...], Any] = {}
    for name, prop in node.get("properties", {}).items():
        if "default" in prop:
            found[(*path, name)] = prop["default"]
        found.update(_defaults(prop, (*path, name)))
    return found


def test_a_spec_that_leaves_a_key_out_gets_the_schema_default(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, HEAD + "sample: {n: 1}\n"))
    assert spec.sample is not None
    holders = {"execution": spec.execution, "sample": spec.sample, "limits": spec}
    defaults = _defaults(SCHEMA)
    assert ("execution", "concurrency") in defaults and ("sample", "seed") in defaults
    for path, default in defaults.items():
        holder = holders[path[0]] if len(path) == 2 else spec
        got = getattr(holder, path[-1])
        assert got == default, path
    # the value types without a spec file agree
    assert Execution() == spec.execution and Sample(1) == spec.sample
    assert isinstance(Execution().timeout, float)


def test_no_spec_default_is_written_outside_the_schema() -> None:
    # A default written twice drifts: the loader and the value types read the schema's.
    runner_dir = Path(__file__).resolve().parent.parent / "runner"
    load = ast.parse((runner_dir / "spec" / "load.py").read_text(encoding="utf-8"))
    literal_defaults = [
        ast.unparse(call)
        for call in ast.walk(load)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "get"
        and len(call.args) == 2
        and isinstance(call.args[1], ast.Constant)
        and call.args[1].value is not None
    ]
    assert literal_defaults == []
    models = ast.parse((runner_dir / "models.py").read_text(encoding="utf-8"))
    literal_fields = [
        ast.unparse(node)
        for node in ast.walk(models)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.value, ast.Constant)
        and node.value.value is not None
    ]
    assert literal_fields == []


def test_schema_is_valid_and_versioned() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"].endswith("/job/v1.json")
    assert SCHEMA["properties"]["version"]["const"] == 1


def test_every_key_has_a_description_and_objects_are_closed() -> None:
    for where, node in _objects(SCHEMA):
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}/properties/{name} has no description"
        if "properties" in node:
            assert node.get("additionalProperties") is False, where


def test_shipped_specs_satisfy_the_plain_schema() -> None:
    validator = Draft202012Validator(SCHEMA)
    for path in sorted(SPECS.glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# yaml-language-server: $schema=../schemas/job.schema.json\n")
        data, _ = load_yaml(text)
        assert list(validator.iter_errors(data)) == [], path.name


def test_execution_priority_and_store_io(tmp_path):
    from runner.spec.load import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "version: 1\nendpoint: fal-ai/flux-1/dev/image-to-image\n"
        "execution: {priority: low, store_io: false}\n"
    )
    loaded = load_spec(spec)
    assert loaded.execution.priority == "low" and loaded.execution.store_io is False


def test_execution_allow_fallbacks(tmp_path):
    from runner.spec.load import load_spec

    spec = tmp_path / "s.yaml"
    head = "version: 1\nendpoint: fal-ai/flux-1/dev/image-to-image\n"
    spec.write_text(head)
    assert load_spec(spec).execution.allow_fallbacks is False  # fal may not swap the model
    spec.write_text(head + "execution: {allow_fallbacks: true}\n")
    assert load_spec(spec).execution.allow_fallbacks is True
    spec.write_text(head + "execution: {allow_fallbacks: yes please}\n")
    [line] = _errors(spec)
    assert "allow_fallbacks" in line
