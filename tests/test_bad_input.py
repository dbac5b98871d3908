"""Bad input the issue found reaching a traceback: each gives exit 2 and one line naming the
field or file, with nothing written under sweeps/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import REPO

CACHE = REPO / ".cache" / "harness"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(CACHE))
    return tmp_path


def _one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("harness: error:")]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _run(args: list[str], root: Path, capsys) -> str:
    code = main([*args, "sweep.name=bad"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert not (root / "sweeps").exists()
    return err


def test_rouge_folder_without_the_fields(in_tmp, capsys) -> None:
    folder = in_tmp / "rouge"
    folder.mkdir()
    (folder / "part.jsonl").write_text('{"x": 1, "y": 2}\n')
    err = _run([f"data.rouge.path={folder}"], in_tmp, capsys)
    _one_error_line(err, str(folder), "prompt")


def test_empty_rouge_folder(in_tmp, capsys) -> None:
    folder = in_tmp / "empty"
    folder.mkdir()
    _one_error_line(_run([f"data.rouge.path={folder}"], in_tmp, capsys), str(folder), "empty")


@pytest.mark.parametrize("files", [[], ["tokenizer.json"]])
def test_model_folder_without_config_json(in_tmp, capsys, tiny_model_dir, files) -> None:
    folder = in_tmp / "model"
    folder.mkdir()
    for name in files:
        shutil.copy(tiny_model_dir / name, folder / name)
    err = _run(["model=local", f"model.path={folder}"], in_tmp, capsys)
    _one_error_line(err, "model.path", "config.json")


def test_model_folder_with_a_broken_tokenizer(in_tmp, capsys, tiny_model_dir) -> None:
    folder = in_tmp / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "tokenizer.json").write_text("{not json")
    err = _run(["model=local", f"model.path={folder}"], in_tmp, capsys)
    _one_error_line(err, "model.path", "tokenizer.json")


def test_rdb_storage_without_url(in_tmp, capsys) -> None:
    _one_error_line(_run(["storage=rdb"], in_tmp, capsys), "storage.url")


def test_unreadable_file(tmp_path) -> None:
    # root reads any file; without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH it is an ordinary user
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is missing")
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"prompt": "p", "summary": "s"}\n')
    secret.chmod(0)
    drop = ["--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    result = subprocess.run([setpriv, *drop, sys.executable, "-m", "harness",
                             f"data.rouge.path={secret}", "sweep.name=bad"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HARNESS_CACHE": str(CACHE),
                                 "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr[-2000:]
    _one_error_line(result.stderr, str(secret), "Permission denied")
    assert not (tmp_path / "sweeps").exists()
