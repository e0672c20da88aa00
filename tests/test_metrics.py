import math

import numpy as np
import pytest

from lifelong.evaluation import AccuracyMatrix
from lifelong.evaluation import functional as fn

R = [[0.9, 0.1, 0.2],
     [0.7, 0.8, 0.3],
     [0.6, 0.5, 0.9]]
BASELINE = [0.1, 0.1, 0.1]


def test_formulas_on_a_known_matrix():
    assert fn.average_accuracy(R) == pytest.approx((0.6 + 0.5 + 0.9) / 3)
    assert fn.learning_accuracy(R) == pytest.approx((0.9 + 0.8 + 0.9) / 3)
    assert fn.average_retention(R) == pytest.approx((0.6 / 0.9 + 0.5 / 0.8) / 2)
    assert fn.backward_transfer(R) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert fn.forward_transfer(R, BASELINE) == pytest.approx(((0.1 - 0.1) + (0.3 - 0.1)) / 2)
    assert fn.forgetting(R) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    assert fn.specialist_retention(R, [1.0, 0.5, 0.9]) == pytest.approx((0.6 + 1.0 + 1.0) / 3)


def test_forgetting_uses_the_best_earlier_accuracy():
    r = [[0.5, 0, 0], [0.9, 0.7, 0], [0.6, 0.7, 0.8]]
    assert fn.forgetting(r) == pytest.approx(((0.9 - 0.6) + (0.7 - 0.7)) / 2)


def test_metrics_do_not_modify_their_input():
    r = np.array(R)
    before = r.copy()
    fn.summary(r, BASELINE, [1, 1, 1])
    assert (r == before).all()


def test_bad_matrices_are_rejected():
    with pytest.raises(ValueError, match="square"):
        fn.average_accuracy([[0.1, 0.2]])
    with pytest.raises(ValueError, match="baseline"):
        fn.forward_transfer(R, [0.1])
    assert math.isnan(fn.average_retention([[0.5]]))


def test_accuracy_matrix_update_compute_reset():
    m = AccuracyMatrix(3, BASELINE)
    for i, row in enumerate(R):
        m.update(i, row)
    assert m.compute() == pytest.approx(fn.summary(R, BASELINE))
    assert AccuracyMatrix.from_list(m.tolist(), BASELINE).compute() == pytest.approx(m.compute())
    m.reset()
    with pytest.raises(ValueError, match="no row"):
        m.compute()
    m.update(0, R[0])
    assert m.compute()["average_accuracy"] == pytest.approx(0.9)  # only the tasks learned so far
    with pytest.raises(ValueError):
        m.update(0, [0.1])


def test_forward_transfer_is_none_where_a_task_cannot_be_scored_before_it_is_learned():
    from lifelong.evaluation import AccuracyMatrix

    m = AccuracyMatrix(2, baseline=[0.1, 0.2])
    m.update(0, [0.9, 0.0])
    m.update(1, [0.8, 0.9])
    assert m.compute(forward_transfer=False)["fwt"] is None  # class-IL: task 1's classes were not live yet
    assert m.compute()["fwt"] == pytest.approx(0.0 - 0.2)


def test_class_il_runs_report_no_forward_transfer_and_task_il_runs_do(tmp_path):
    from lifelong.data import StreamConfig
    from lifelong.learner import LearnerConfig
    from lifelong.run import ModelConfig, RunConfig, run

    for scenario, has_fwt in (("class", False), ("task", True)):
        r = run(RunConfig(StreamConfig("split-digits", scenario, tasks=2), "naive", {}, LearnerConfig(epochs=1),
                          ModelConfig(hidden=(8,)))).record
        assert (r["fwt"] is not None) == has_fwt, scenario
