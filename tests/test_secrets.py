"""The API key never reaches the output folder, the terminal, or error text."""

from __future__ import annotations

import uuid

from runner.cli.commands import main
from runner.emulator import Faults


def test_key_is_found_nowhere(write_spec, tmp_path, monkeypatch, fal_server, capfd):
    key = f"sk-leakcheck-{uuid.uuid4().hex}"
    server = fal_server(
        key,
        keys=frozenset({key}),
        faults=Faults(p_429=0.2, p_500=0.1, p_503_ingress=0.1, p_infra_error=0.2),
        retry_after=0.1,
    )
    spec = write_spec(matrix={"seed": {"range": [0, 9]}}, backend="fal", execution={"retries": 1})
    out = tmp_path / "out"
    main(["run", str(spec), "--out", str(out), "--no-progress"])
    main(["plan", str(spec)])
    main(["validate", str(spec)])
    for name, value in server.env(key + "-wrong").items():
        monkeypatch.setenv(name, value)
    assert main(["run", str(spec), "--out", str(tmp_path / "other"), "--retry-failed"]) == 3
    captured = capfd.readouterr()
    assert key not in captured.out and key not in captured.err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.jsonl" for p in files)
    for path in files:
        assert key.encode() not in path.read_bytes(), path
