"""Data sets by name: `lifelong data fetch` verifies what it downloads and leaves nothing behind when it
cannot; without a network it says what to download and where; the loaders look in $LIFELONG_DATA."""

from __future__ import annotations

import gzip
import shutil
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.data import registry
from lifelong.data.text import clinc150_dir, load_clinc150
from lifelong.data.vision import fashion_mnist_dir


def _local_clinc150() -> Path:
    """Where the loader finds CLINC150 on this machine (shared/ beside the checkout, or the user's setting)."""
    try:
        return clinc150_dir()
    except Exception:
        return Path("no-local-clinc150")


SHARED = _local_clinc150()


def _offline(url, target, timeout):
    raise urllib.error.URLError("Name or service not known")


def _served_from(monkeypatch, folder: Path) -> None:
    """CLINC150's files come from `folder` (file:// URLs) instead of GitHub."""
    data = registry.DATASETS["clinc150"]
    files = tuple(replace(f, urls=((folder / f.name).as_uri(),)) for f in data.files)
    monkeypatch.setitem(registry.DATASETS, "clinc150", replace(data, files=files))


def test_offline_fetch_says_what_to_download_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "_download", _offline)
    target = tmp_path / "data" / "clinc150"
    assert main(["data", "fetch", "clinc150", "--dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json" in err
    assert "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0" in err
    assert f"download these files into {target}/" in err and not target.exists()


@pytest.mark.skipif(not SHARED.exists(), reason="no local copy of CLINC150 to serve")
def test_fetch_verifies_the_published_checksums_and_the_loader_reads_the_result(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    plain = SHARED / "data_full.json"
    with (open(plain, "rb") if plain.exists() else gzip.open(SHARED / "data_full.json.gz", "rb")) as f, \
            open(served / "data_full.json", "wb") as out:
        shutil.copyfileobj(f, out)
    shutil.copy(SHARED / "domains.json", served / "domains.json")
    _served_from(monkeypatch, served)
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("LIFELONG_CLINC150", raising=False)
    assert main(["data", "fetch", "clinc150"]) == 0
    assert clinc150_dir() == tmp_path / "data" / "clinc150"
    assert len(load_clinc150().splits["train"]) == 15000
    monkeypatch.setattr(registry, "_download", _offline)  # present and verified: nothing is downloaded
    assert main(["data", "fetch", "clinc150"]) == 0


def test_a_download_with_the_wrong_checksum_is_not_kept(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "data_full.json").write_text("{}")
    (served / "domains.json").write_text("{}")
    _served_from(monkeypatch, served)
    target = tmp_path / "clinc150"
    with pytest.raises(registry.FetchError, match=r"data_full\.json: sha256 44136fa3.*, expected 36923c37"):
        registry.fetch("clinc150", target)
    assert not target.exists()


def test_the_loaders_look_in_the_data_folder_first(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    assert fashion_mnist_dir() == tmp_path  # the older layout: the files in $LIFELONG_DATA itself
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "clinc150").mkdir()
    monkeypatch.delenv("LIFELONG_CLINC150", raising=False)
    assert fashion_mnist_dir() == tmp_path / "fashion-mnist" and clinc150_dir() == tmp_path / "clinc150"
    assert fashion_mnist_dir("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("LIFELONG_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert registry.folder("clinc150") == tmp_path / "xdg" / "lifelong" / "clinc150"
