"""Ingest reads a batch of inputs into memory at once: batches are bounded by bytes too."""

from __future__ import annotations

from pathlib import Path

from producer.ingest import InputItem, _file_input, batches


def _item(name: str, size: int) -> InputItem:
    return InputItem(name=name, read=lambda: b"", origin="upload", size=size)


def test_batches_hold_at_most_count_items_and_budget_bytes() -> None:
    photos = [_item(f"p{i}", 3) for i in range(7)]
    assert [len(b) for b in batches(photos, count=3, budget=100)] == [3, 3, 1]
    # large files go alone, or with what still fits beside them; order is kept
    mixed = [_item("a", 40), _item("b", 40), _item("big", 500), _item("c", 10), _item("d", 95)]
    assert [[i.name for i in b] for b in batches(mixed, count=32, budget=100)] == \
        [["a", "b"], ["big"], ["c"], ["d"]]
    # unknown sizes (0) are bounded by the count alone
    assert [len(b) for b in batches([_item("x", 0)] * 5, count=2, budget=1)] == [2, 2, 1]
    assert list(batches([], count=2, budget=1)) == []


def test_file_inputs_carry_their_size(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x" * 1234)
    assert _file_input(path).size == 1234
    assert _file_input(tmp_path / "gone.jpg").size == 0  # reading it reports the error
