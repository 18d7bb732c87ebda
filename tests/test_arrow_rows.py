"""Rows and Arrow schemas derived from dataclasses (``rgpt4d_core/arrow_rows.py``), and the evaluation's
``Prediction`` rows that use them."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pytest

from rgpt4d_core.arrow_rows import arrow_type, row_of, row_schema
from rgpt4d_core.eval.predict import PREDICTION_SCHEMA, Prediction


@dataclass(frozen=True)
class _Row:
    name: str
    count: int
    score: float | None
    ok: bool = True

    @property
    def doubled(self) -> int:
        return 2 * self.count


def test_schema_follows_the_fields_then_the_properties() -> None:
    schema = row_schema(_Row, ("doubled",))
    assert schema.names == ["name", "count", "score", "ok", "doubled"]
    assert schema.types == [pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.int64()]
    assert all(f.nullable for f in schema)
    row = row_of(_Row("a", 3, None), ("doubled",))
    assert row == {"name": "a", "count": 3, "score": None, "ok": True, "doubled": 6}
    assert pa.Table.from_pylist([row], schema=schema).to_pylist() == [row]


def test_types_a_row_cannot_hold_are_refused() -> None:
    with pytest.raises(TypeError, match="no Arrow column type"):
        arrow_type(list[int])
    with pytest.raises(TypeError, match="no Arrow column type"):
        arrow_type(int | str)
    with pytest.raises(TypeError, match="is not a property"):
        row_schema(_Row, ("count",))


def test_prediction_rows_fit_their_schema_and_read_back() -> None:
    answered = Prediction("q1", "SR", 4, 2, 2, "letter", "C", duration_s=3.0, num_frames=16, decode_ms=1.5)
    failed = Prediction("q2", "DP", 3, 0, None, "error", "", error_code="video_corrupt", error="bad")
    rows = [answered.to_row(), failed.to_row()]
    assert list(rows[0]) == PREDICTION_SCHEMA.names
    assert (rows[0]["answer_letter"], rows[0]["pred_letter"], rows[0]["correct"]) == ("C", "C", True)
    assert (rows[1]["answer_letter"], rows[1]["pred_letter"], rows[1]["correct"]) == ("A", None, False)
    table = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
    assert [Prediction.from_row(r) for r in table.to_pylist()] == [answered, failed]
    assert PREDICTION_SCHEMA.field("pred_index").type == pa.int64() and PREDICTION_SCHEMA.field("correct").type == pa.bool_()
