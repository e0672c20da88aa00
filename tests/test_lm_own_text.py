"""A GPT on the user's own text: `read_text`, `text_stream` and examples/lm_own_text.py, on real files
(Python's own source, which every machine with Python has)."""

import json
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from lifelong.data.lm import LMDataConfig, read_text, text_stream
from lifelong.lm import LMLearner
from lifelong.models.gpt import GPT, gpt_config
from lifelong.strategies import build_strategy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import lm_own_text  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SMALL = ["--model", "gpt-0.2m", "--steps", "40", "--batch-size", "8", "--length", "64"]


def test_a_folder_is_its_text_files_in_order_without_hidden_or_binary_ones(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "x.pyc").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    assert read_text(tmp_path) == b"first\n\nsecond"
    assert read_text(tmp_path / "a.txt") == b"first"
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        read_text(tmp_path / "missing")


def test_each_text_is_a_task_split_by_position_so_no_held_out_byte_is_trained_on() -> None:
    text = b"a" * 9216 + bytes(range(98, 226)) * 8  # 10,240 bytes: the first 90 % are "a", the held-out end not
    stream = text_stream({"t": text, "u": "plain text " * 1000}, LMDataConfig(length=32, steps=5, batch_size=4))
    assert [t.name for t in stream] == ["t", "u"] and stream[0].train.x.shape == (20, 32)
    assert set(stream[0].train.x.unique().tolist()) == {ord("a")}
    held_out = torch.cat([stream[0].valid.x, stream[0].test.x])
    assert ord("a") not in held_out.unique().tolist() and len(stream[0].test) == 64
    # valid is the first half of the held-out end, test the second, each tiled by evenly spaced windows
    assert torch.equal(stream[0].valid.x[0], torch.tensor(list(text[9216:9248]), dtype=torch.uint8))
    assert torch.equal(stream[0].test.x[0], torch.tensor(list(text[9728:9760]), dtype=torch.uint8))
    assert torch.equal(stream[0].test.x[-1], torch.tensor(list(text[-33:-1]), dtype=torch.uint8))
    with pytest.raises(ValueError, match="too short"):
        text_stream({"short": "x" * 300}, LMDataConfig(length=32))


def test_the_example_learns_text_after_text_and_saves_the_gpt_it_scored(tmp_path: Path, capsys) -> None:
    texts = [str(STDLIB / "json"), str(STDLIB / "textwrap.py")]
    saved = tmp_path / "gpt.pt"
    assert lm_own_text.main([*texts, *SMALL, "--save", str(saved), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    matrix = out["matrix"]
    assert out["tasks"] == texts and len(matrix) == 2 and out["strategy"] == "token-replay"
    assert matrix[0][0] > 0.2  # learned: chance is 1/256, the commonest byte (space) about 0.15
    assert out["metrics"]["learning_accuracy"] == pytest.approx((matrix[0][0] + matrix[1][1]) / 2)

    # the saved GPT is the one that was scored: the last row again, from the file
    model = GPT(gpt_config("gpt-0.2m", block_size=64))
    model.load_state_dict(torch.load(saved, weights_only=True))
    stream = text_stream({t: read_text(t) for t in texts}, LMDataConfig(length=64, steps=40, batch_size=8))
    learner = LMLearner(model, build_strategy("naive", {}))
    assert learner.evaluate(stream) == pytest.approx(matrix[1])

    # and it starts a later run (--init): the first text is known before any step on it
    assert lm_own_text.main([texts[0], *SMALL, "--steps", "1", "--init", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matrix"][0][0] > 0.2


@pytest.mark.parametrize(("args", "message"), [
    (["missing-folder"], "no file or folder"),
    ([str(STDLIB / "this.py"), "--length", "4096"], "too short"),
    ([str(STDLIB / "textwrap.py"), "--strategy", "no-such"], "no-such"),
    ([str(STDLIB / "textwrap.py"), "--options", "{not json"], "error"),
    ([str(STDLIB / "textwrap.py"), "--options", '{"no_such_option": 1}'], "no_such_option"),
    ([str(STDLIB / "textwrap.py"), "--init", str(STDLIB / "textwrap.py")], "is not a gpt-1m state dict"),
])
def test_bad_input_is_a_clear_error_and_exit_code_2(args: list[str], message: str, capsys) -> None:
    assert lm_own_text.main(args) == 2
    assert message in capsys.readouterr().err
