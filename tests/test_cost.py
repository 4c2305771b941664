import math

import pytest

from lab.sim.cost import HARDWARE_PRESETS, CostModel, resolve_cost


def test_seed_defaults():
    cost = CostModel()
    assert (cost.hit_latency_ms, cost.miss_latency_ms_per_mb, cost.miss_latency_ms) == (0.01, 0.1, 0.0)
    assert resolve_cost(None) == cost


def test_transfer_time_uses_decimal_gigabytes_per_second():
    assert CostModel(dram_bandwidth_gb_s=2.0).transfer_ms(10**9) == pytest.approx(500.0)


def test_presets_are_tied_to_a_buffer_and_resolve_by_name():
    for name, preset in HARDWARE_PRESETS.items():
        assert resolve_cost(name.upper()) is preset
        assert preset.name == "seed" or preset.buffer_mb > 0
    assert HARDWARE_PRESETS["h100-sxm5"].dram_bandwidth_gb_s == 3350.0
    assert HARDWARE_PRESETS["a100-sxm4-40gb"].buffer_mb == 40.0


@pytest.mark.parametrize("field", ["hit_latency_ms", "miss_latency_ms", "miss_latency_ms_per_mb", "dram_bandwidth_gb_s"])
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "1"])
def test_bad_cost_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"CostModel.{field}"):
        CostModel(**{field: value})


def test_zero_bandwidth_is_rejected():
    with pytest.raises(ValueError, match="dram_bandwidth_gb_s must be at least"):
        CostModel(dram_bandwidth_gb_s=0)


def test_presets_name_the_buffer_model_that_fits_them():
    from lab.sim.model import BUFFERS

    assert {name: p.buffer for name, p in HARDWARE_PRESETS.items()} == {
        "seed": "scratchpad", "H100-SXM5": "cache", "H200": "cache", "A100-SXM4-40GB": "cache"}
    assert CostModel().buffer == "scratchpad" and set(BUFFERS) == {"scratchpad", "cache"}


@pytest.mark.parametrize("buffer, error", [("l2", ValueError), (None, TypeError), (2, TypeError)])
def test_a_bad_preset_buffer_model_is_named(buffer, error):
    with pytest.raises(error, match=r"buffer must be one of \['scratchpad', 'cache'\]"):
        CostModel(buffer=buffer)
