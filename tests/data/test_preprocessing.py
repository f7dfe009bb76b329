import numpy as np
import tensorflow as tf

from fedsim.data import ClientData
from fedsim.data import preprocessing as pp


def _numbers(n):
    return tf.data.Dataset.range(n)


def _values(dataset):
    return [np.asarray(e).tolist() for e in dataset.as_numpy_iterator()]


def test_repeat_shuffle_batch_take_compose():
    fn = pp.compose(pp.repeat(2), pp.batch(3), pp.take(3))
    assert _values(fn(_numbers(4))) == [[0, 1, 2], [3, 0, 1], [2, 3]]


def test_shuffle_is_reproducible_per_seed_and_differs_between_rounds():
    seeds = [pp.round_seed(7, round_num) for round_num in range(3)]
    assert len(set(seeds)) == 3
    orders = [_values(pp.shuffle(100, seed)(_numbers(50))) for seed in seeds]
    assert orders[0] == _values(pp.shuffle(100, seeds[0])(_numbers(50)))
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(50))


def test_flatten_reshape_and_select():
    dataset = tf.data.Dataset.from_tensor_slices(
        {"pixels": np.arange(2 * 4, dtype=np.float32).reshape(2, 2, 2), "label": np.array([1, 2])}
    )
    flat = pp.compose(pp.flatten("pixels"), pp.select("pixels", "label"))(dataset)
    (x0, y0), (x1, y1) = flat.as_numpy_iterator()
    assert x1.tolist() == [4.0, 5.0, 6.0, 7.0] and (int(y0), int(y1)) == (1, 2)
    square = pp.reshape([2, 2])(flat)  # key 0: the x of (x, y)
    x, y = next(iter(square))
    assert x.shape == (2, 2) and y.shape == ()


def test_next_char_sequences_match_hand_computed_ids():
    vocab = "".join(pp.CHAR_VOCAB)
    d, h = vocab.index("d") + 1, vocab.index("h") + 1  # ids start at 1; 0 pads
    oov, bos, eos = len(vocab) + 1, len(vocab) + 2, len(vocab) + 3
    assert (pp.OOV_ID, pp.BOS_ID, pp.EOS_ID, pp.CHAR_VOCAB_SIZE) == (oov, bos, eos, len(vocab) + 4)
    snippets = tf.data.Dataset.from_tensor_slices({"snippets": ["dh", "h~dhd"]})
    pairs = _values(pp.next_char_sequences(sequence_length=3)(snippets))
    # "dh" -> [bos d h eos] (one chunk of 4); "h~dhd" -> [bos h oov d h d eos 0] (two chunks).
    expected_chunks = [[bos, d, h, eos], [bos, h, oov, d], [h, d, eos, 0]]
    assert pairs == [[chunk[:-1], chunk[1:]] for chunk in expected_chunks]


def test_helpers_compose_on_a_population_and_trace_once():
    population = ClientData.from_tensor_slices(
        {f"c{i}": {"snippets": np.array(["to be or not to be"] * (i + 1))} for i in range(3)}
    )
    prepared = population.preprocess(pp.compose(pp.next_char_sequences(5), pp.batch(2)))
    inputs, targets = next(iter(prepared.create_tf_dataset_for_client("c2")))
    assert inputs.shape == (2, 5) and targets.dtype == tf.int64
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    for client_id in prepared.client_ids:
        list(prepared.create_tf_dataset_for_client(client_id))
    assert prepared._pipeline.experimental_get_tracing_count() == 1
