import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedsim.data import ClientDataError
from fedsim.data.client_ids import ListIds, RangeIds, SortedArrayIds, SubsetIds, sample_positions


def test_range_ids_compute_and_parse_ids():
    ids = RangeIds(1000, prefix="u")
    assert ids[0] == "u0" and ids[-1] == "u999" and ids[2:4] == ["u2", "u3"]
    assert ids.index("u512") == 512
    for not_an_id in ["u1000", "u01", "u-1", "x5", "u", "u+3"]:
        assert not_an_id not in ids
    with pytest.raises(ClientDataError, match="'u01'"):
        ids.index("u01")


# NumPy byte strings drop trailing NULs, so ids are drawn without NUL (real ids have none).
@given(
    st.sets(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8),
        min_size=1,
        max_size=30,
    )
)
def test_sorted_array_ids_match_a_python_list(names):
    ordered = sorted(names, key=lambda s: s.encode("utf-8"))
    ids = SortedArrayIds(np.array([name.encode("utf-8") for name in ordered], dtype=np.bytes_))
    assert list(ids) == ordered
    for position, name in enumerate(ordered):
        assert ids.index(name) == position


def test_sorted_array_ids_reject_unsorted_input():
    with pytest.raises(ClientDataError, match="out of order"):
        SortedArrayIds(np.array([b"b", b"a"]))


def test_subset_ids_keep_base_order_and_only_their_members():
    subset = SubsetIds(RangeIds(10), np.array([7, 2, 5]))
    assert list(subset) == ["client_2", "client_5", "client_7"]
    assert subset.index("client_7") == 2
    assert "client_3" not in subset


def test_list_ids_reject_duplicates():
    with pytest.raises(ClientDataError, match="'a'"):
        ListIds(["a", "b", "a"])


def test_sample_positions_are_distinct_and_in_range():
    positions = sample_positions(10**9, 100, np.random.default_rng(0))
    assert len(np.unique(positions)) == 100 and positions.max() < 10**9
