"""``bench scale --linear``: the memory growth figure, from the sizes' measured figures alone.

A size whose batch did not raise the peak memory past the warm-up's (0 KiB) gives no ratio; the
figure is measured from the first size that did, or reported as not computable.
"""

from __future__ import annotations

from multiagent.bench.scale_linear import LinearScaleResult, SizeFigures, render_linear


def _size(size: int, peak_growth_kb: int) -> SizeFigures:
    # the same time per item at every size: only memory differs between the cases
    return SizeFigures(
        size=size, seconds=size / 1000, status="completed", finished=size, calls=2 * size,
        peak_growth_kb=peak_growth_kb,
    )  # fmt: skip


def _result(*sizes: SizeFigures) -> LinearScaleResult:
    return LinearScaleResult(sizes=list(sizes), validators=2, concurrency=8)


def test_growth_from_the_smallest_size_when_it_raised_the_peak() -> None:
    result = _result(_size(20, 40), _size(60, 240))
    assert result.memory_growth == 2.0  # 4 KiB / item over 2
    assert result.memory_base is result.sizes[0]
    assert not result.met
    assert "peak memory: **2.00×** (target" in render_linear(result)


def test_a_first_size_at_0_kib_is_not_taken_as_flat_memory() -> None:
    result = _result(_size(20, 0), _size(60, 600), _size(180, 5400))
    assert result.memory_growth == 3.0  # 30 KiB / item over 10, not 1.0
    assert result.memory_base is result.sizes[1]
    assert not result.met
    document = result.as_dict()
    assert document["memory_growth"] == 3.0
    assert document["memory_growth_from_size"] == 60
    assert document["target"]["memory_judged"] is True
    assert "**3.00×**, measured from 60 items" in render_linear(result)


def test_no_smaller_size_raised_the_peak_gives_no_figure() -> None:
    for largest in (0, 900):
        result = _result(_size(20, 0), _size(60, largest))
        assert result.memory_growth is None  # not 1.0
        assert result.memory_base is None
        document = result.as_dict()
        assert document["memory_growth"] is None
        assert document["target"]["memory_judged"] is False
        assert result.met  # time stayed flat; memory is not judged, and the report says so
        assert "peak memory: not computable" in render_linear(result)
        assert "verdict is on time alone" in render_linear(result)
