"""The progress bar names what each figure measures (train or test) and when the test figure was taken."""
from fedsim.simulation.loop import _postfix


def _record(round_num, train_accuracy, test_accuracy=None):
    record = {"round": round_num, "train": {"loss": 0.5, "accuracy": train_accuracy}}
    if test_accuracy is not None:
        record["eval"] = {"loss": 0.7, "accuracy": test_accuracy}
    return record


def test_train_and_test_accuracy_are_labelled_and_the_test_one_keeps_its_round():
    history = [_record(15, 0.09, test_accuracy=0.2243)]
    assert _postfix(history) == {"train_loss": "0.5000", "train_acc": "0.0900", "test_acc": "0.2243 (round 15)"}
    history.append(_record(16, 0.0906))  # no evaluation in round 16: the test figure stays round 15's
    assert _postfix(history) == {"train_loss": "0.5000", "train_acc": "0.0906", "test_acc": "0.2243 (round 15)"}


def test_no_test_figure_before_the_first_evaluation():
    assert _postfix([_record(1, 0.5)]) == {"train_loss": "0.5000", "train_acc": "0.5000"}
