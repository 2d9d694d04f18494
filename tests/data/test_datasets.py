import numpy as np
import pytest

from pollen.data import load_dataset
from pollen.errors import DataError


def test_chatterbot_has_21_categories_and_a_held_out_split():
    d = load_dataset("chatterbot", seed=0)
    assert len(d.train.group_names) == 21
    assert len(d.eval) == 64 and len(d.train) == 1243 - 64
    assert d.train.task == "causal-lm" and all(d.train.responses)
    held = set(zip(d.eval.prompts, d.eval.responses))
    # The corpus repeats pairs verbatim; none of the held-out pairs may leak into training.
    assert not any((p, r) in held for p, r in zip(d.train.prompts, d.train.responses))


def test_tweets_three_labels_majority_below_half():
    d = load_dataset("tweets", seed=0)
    assert d.num_labels == 3 and d.label_names == ["negative", "neutral", "positive"]
    counts = np.bincount(d.train.labels, minlength=3)
    assert len(d.train) > 30000 and counts.max() / counts.sum() < 0.5


def test_local_files(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"question": "hi", "answer": "hello", "category": "a"}\n' * 20)
    d = load_dataset(str(tmp_path / "qa.jsonl"), eval_size=4)
    assert d.train.task == "causal-lm" and len(d.train) == 16
    (tmp_path / "cls.csv").write_text("text,label\n" + "good,pos\nbad,neg\n" * 10)
    c = load_dataset(str(tmp_path / "cls.csv"), eval_size=4)
    assert c.num_labels == 2 and c.label_names == ["neg", "pos"]
    (tmp_path / "odd.json").write_text('[{"foo": 1}]')
    with pytest.raises(DataError, match="need columns"):
        load_dataset(str(tmp_path / "odd.json"), eval_size=1)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("no-such-dataset")
