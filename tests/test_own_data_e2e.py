"""Your own data end to end, as a new user meets it: files this test writes (a CSV of text, a folder of
small PNGs, an .npz of numbers, a CSV of numbers through a network factory of the user's, JSON Lines of
text through a local Hugging Face folder: the MiniLM package's files), each through `lifelong run` with
its HTML report and `--save`, `lifelong serve` (a real server in a subprocess) and one feedback update
that the gate promotes, after which the new label is answered.

The CSV-of-text case is the README's section "Your own data in five minutes", its commands read from
the README and run one after another by bash as written (`own_data.py`), so the two cannot drift.
One class per case: `make test` gives each class to a worker of its own (`--dist loadscope`).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
from own_data import REPO, Shell, readme_commands, served, teach
from PIL import Image
from test_network import INTENTS

from lifelong.encoders import encoder_available


def _need_text() -> None:
    if not encoder_available():
        pytest.skip("the MiniLM encoder is not installed: pip install 'lifelong[text]'")


class TestTheReadmeSection:
    def test_its_commands_run_as_written(self, tmp_path):
        _need_text()
        if not shutil.which("curl"):
            pytest.skip("curl is not installed: apt-get install curl")
        commands = readme_commands()
        assert [c.split()[0] for c in commands] == ["python", "lifelong", "lifelong", "export", "lifelong", "curl",
                                                    "until", "curl"]
        work = tmp_path / "work"
        work.mkdir()
        (work / "examples").symlink_to(REPO / "examples")
        with Shell(work) as shell:
            out = [shell.run(c) for c in commands]
        final = {row[0]: float(row[2]) for row in re.findall(r"^\| (\S+) \| (\d+) \| ([\d.]+) \|", out[1], re.M)}
        assert final["naive"] < 0.5 and final["ewc+replay"] > 0.9, out[1]  # naive forgets; replay keeps
        assert (work / "tickets-report" / "index.html").is_file()
        assert (work / "tickets-model" / "manifest.json").is_file()
        assert json.loads(out[5])["accepted"] == 10
        label = set(re.findall(r'"label": "(\w+)"', commands[5]))
        reply = json.loads(out[7])
        assert reply["version"] == 2 and {p["label"] for p in reply["predictions"]} == label, reply


# -- pictures ----------------------------------------------------------------------------------------------
def _picture(kind: str, seed: int, size: int = 8, mode: str = "RGB") -> Image.Image:
    """8x8 patterns in a random colour on a noisy background: stripes across or down, a checkerboard, a frame,
    and (never in the training data) a dot in the middle."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[:size, :size]
    shape = {"across": i % 2 == 0, "down": j % 2 == 0, "checker": (i + j) % 2 == 0,
             "frame": (i == 0) | (j == 0) | (i == size - 1) | (j == size - 1),
             "dot": (abs(i - size / 2 + 0.5) < 2) & (abs(j - size / 2 + 0.5) < 2)}[kind]
    colour = rng.integers(128, 256, size=3)
    pixels = rng.integers(0, 60, size=(size, size, 3)) + shape[..., None] * colour
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


class TestAnImageFolder:
    def test_pictures_in_the_api_and_a_new_class_learned(self, tmp_path):
        for kind in ("across", "down", "checker", "frame"):
            (tmp_path / "shapes" / kind).mkdir(parents=True)
            for k in range(15):
                _picture(kind, k).save(tmp_path / "shapes" / kind / f"{k}.png")
        with served(tmp_path, f"images:{tmp_path / 'shapes'}", "--classes-per-task", "2", "--scenario", "class") as c:
            _bad_pictures_get_a_4xx_and_nothing_is_stored(c)
            probes = [_b64(_picture("dot", 100)), _b64(_picture("dot", 101), "JPEG"),
                      _b64(_picture("down", 102, mode="L"))]  # a grey picture for an RGB model: converted
            teach(c, [_b64(_picture("dot", k)) for k in range(12)], "dot", probes, ["dot", "dot", "down"])
            pixels = np.asarray(_picture("frame", 103)).transpose(2, 0, 1).tolist()  # values 0-255 as nested lists
            assert c.post("/predict", json={"inputs": [pixels]}).json()["predictions"][0]["label"] == "frame"


def _bad_pictures_get_a_4xx_and_nothing_is_stored(c) -> None:
    gif = _b64(_picture("dot", 0), "GIF")
    huge = _b64(Image.new("L", (2100, 2100)))  # a small file of too many pixels
    for value, status, message in [
        ("not base64 at all!", 422, "is not base64 text"),
        (base64.b64encode(b"hello, world").decode(), 422, "is not a PNG or JPEG file"),
        (gif, 422, "is not a PNG or JPEG file"),
        (_b64(_picture("dot", 0, size=16)), 422, "is 16x16 pixels (height x width); this model takes 8x8 pictures"),
        (huge, 413, "a picture may have at most 4,194,304"),
        ("A" * (3 * 2**20), 413, "a file of more than 2 MiB"),
        ([[0.5]], 422, "has shape [1, 1]; this model takes [3, 8, 8]"),
    ]:
        reply = c.post("/predict", json={"inputs": [value]})
        assert reply.status_code == status and message in reply.json()["detail"], (message, reply.text)
        reply = c.post("/feedback", json={"examples": [{"input": value, "label": "dot"}]})
        assert reply.status_code == status and message in reply.json()["detail"], (message, reply.text)
    assert c.get("/feedback").json()["items"] == []


# -- numbers -------------------------------------------------------------------------------------------------
CENTRES = {name: np.random.default_rng(k).normal(0, 3, size=12) for k, name in enumerate(
    ["bronze", "silver", "gold", "platinum", "diamond"])}


def _points(name: str, n: int, seed: int) -> np.ndarray:
    return (CENTRES[name] + np.random.default_rng(seed).normal(0, 0.5, size=(n, 12))).astype(np.float32)


def _customers(n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12 numbers per customer around one centre per tier; 2022 brought the first two tiers, 2023 the next two."""
    names = ["bronze", "silver", "gold", "platinum"]
    x = np.concatenate([_points(name, n, k) for k, name in enumerate(names)])
    y = np.repeat(names, n)
    year = np.repeat(["2022", "2022", "2023", "2023"], n)
    return x, y, year


def _teach_a_new_tier(c) -> None:
    probes = [_points("diamond", 2, 100).tolist()[0], _points("diamond", 2, 100).tolist()[1],
              _points("bronze", 1, 101).tolist()[0]]
    teach(c, _points("diamond", 12, 99).tolist(), "diamond", probes, ["diamond", "diamond", "bronze"],
          update={"epochs": 30})


class TestAnNpzFile:
    def test_numbers_in_the_api_and_a_new_class_learned(self, tmp_path):
        x, y, year = _customers()
        np.savez(tmp_path / "customers.npz", x=x, y=y, year=year)
        with served(tmp_path, f"npz:{tmp_path / 'customers.npz'},task=year", "--scenario", "class") as c:
            _teach_a_new_tier(c)


FACTORY = '''from torch import nn


def build(inputs=12, width=32):
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
'''


class TestAUserFactoryNetwork:
    def test_a_csv_of_numbers_through_your_own_module(self, tmp_path, monkeypatch):
        code = tmp_path / "code"
        code.mkdir()
        (code / "tiers_net.py").write_text(FACTORY)
        monkeypatch.syspath_prepend(str(code))  # `lifelong run` here, and `lifelong serve` below, import it
        monkeypatch.setenv("PYTHONPATH", f"{code}:{REPO / 'src'}")
        x, y, year = _customers()
        rows = [",".join([*(f"f{i}" for i in range(12)), "tier", "year"])]
        rows += [",".join([*(f"{v:.4f}" for v in x[k]), y[k], year[k]]) for k in range(len(y))]
        (tmp_path / "customers.csv").write_text("\n".join(rows) + "\n")
        with served(tmp_path, f"csv:{tmp_path / 'customers.csv'},label=tier,task=year", "--scenario", "class",
                    "--network", "tiers_net:build", "--network-option", "width=64", "--epochs", "10",
                    serve=("--trust-code",)) as c:
            _teach_a_new_tier(c)


# -- text through a Hugging Face folder ------------------------------------------------------------------------
MUSIC = {"play_song": ["play some jazz", "put on my workout playlist", "play the new album by adele",
                       "start the song i liked yesterday", "play something relaxing", "play rock music"],
         "volume": ["turn the volume up", "make it louder", "lower the volume please", "too loud, turn it down",
                    "set the volume to 5", "mute the speaker"]}


class TestALocalHuggingFaceFolder:
    def test_json_lines_of_text_through_the_minilm_folder(self, tmp_path):
        _need_text()
        from lifelong.encoders import encoder_dir

        lines = [json.dumps({"text": t, "intent": i, "domain": d}) for (d, i), texts in INTENTS.items() for t in texts]
        (tmp_path / "intents.jsonl").write_text("\n".join(lines) + "\n")
        with served(tmp_path, f"jsonl:{tmp_path / 'intents.jsonl'},text=text,label=intent,task=domain",
                    "--network", f"hf:{encoder_dir()}", "--lr", "1e-4", "--batch-size", "8", "--replay-batch", "8",
                    "--epochs", "2") as c:
            examples = [t for texts in MUSIC.values() for t in texts]
            labels = [i for i, texts in MUSIC.items() for _ in texts]
            teach(c, examples, labels, ["play some music by the beatles", "turn it up a bit"],
                  ["play_song", "volume"], task=2, update={"epochs": 3})
