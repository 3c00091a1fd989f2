"""Where stages compute: torch devices (refused up front when absent), bf16 autocast, the
modeled codec, and how the throughput report shows the codec's share of a step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from basics.errors import ConfigError
from harness.config.profiles import BUILTIN, DeviceProfile, device_label
from harness.config.schema import ComputeConfig, RunSpec, build_spec
from harness.results.store import ResultStore
from harness.runtime.check import check_run
from harness.runtime.twin import run_twin
from reports.summary import throughput_summary
from reports.tables import load
from tests.conftest import TOPOLOGIES, needs_netns, pipenem

TOPO = str(TOPOLOGIES / "ci-4stage.yaml")
TINY = {
    "topology": TOPO,
    "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 16},
    "train": {"steps": 4, "batch": 4, "micro_batches": 2, "lr": 1e-3, "warmup": 0},
}


def _spec(**compute: object) -> RunSpec:
    return build_spec({**TINY, "compute": compute})


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "auto"])
def test_a_gpu_that_is_not_there_is_refused_naming_the_field(device: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_run(_spec(device=device))
    assert exc.value.field == "compute.device"
    assert "torch sees none" in str(exc.value) and torch.__version__ in str(exc.value)


def test_a_gpu_index_beyond_the_machine_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        check_run(_spec(device=f"cuda:{max(torch.cuda.device_count(), 1) + 7}"))
    assert exc.value.field == "compute.device"


@no_gpu
def test_the_cli_refuses_cuda_with_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "compute": {"device": "cuda"}}))
    out = tmp_path / "out"
    for extra in (["--twin"], []):  # the twin, and a distributed run before any namespace exists
        r = pipenem("train", str(cfg), "--out", str(out), *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "compute.device" in r.stdout + r.stderr and "Traceback" not in r.stderr
        assert not out.exists()


@pytest.mark.parametrize(
    "compute,field,words",
    [
        ({"device": "a10g"}, "device", "compute.profile: a10g"),  # the old spelling of a profile
        ({"device": "gpu0"}, "device", "cpu, cuda, cuda:N or auto"),
        ({"codec": "modeled"}, "codec", "compute.mode: modeled"),
    ],
)
def test_compute_fields_are_checked(compute: dict, field: str, words: str) -> None:
    with pytest.raises(ValueError) as exc:
        ComputeConfig(**compute)
    assert field in str(exc.value) and words in str(exc.value)


def test_a_modeled_codec_needs_a_profile_with_memory_bandwidth() -> None:
    assert BUILTIN["compute-heavy"].mem_bandwidth is None
    with pytest.raises(ConfigError) as exc:
        check_run(_spec(mode="modeled", profile="compute-heavy", codec="modeled"))
    assert exc.value.field == "compute.codec"
    check_run(_spec(mode="modeled", profile="a10g", codec="modeled"))


def test_the_codec_model_charges_bytes_touched_at_the_memory_bandwidth() -> None:
    p = DeviceProfile("slow", 1e12, 1.0, "test", mem_bandwidth=1e9)
    assert p.codec_seconds(4_000_000, 400_000) == pytest.approx(4.4e-3)


def test_device_labels_say_what_computed() -> None:
    assert device_label("real", "cpu", "a10g") == "cpu (real compute)"
    assert device_label("real", "cuda:1", "a10g") == "cuda:1 (real compute)"
    assert device_label("modeled", "cpu", "h100") == "h100"


def test_bf16_autocast_changes_the_arithmetic_not_the_training() -> None:
    fp32 = [r["loss"] for r in run_twin(_spec())]
    bf16 = [r["loss"] for r in run_twin(_spec(dtype="bfloat16"))]
    assert fp32 != bf16  # autocast engaged: matmuls ran in bf16
    assert all(math.isfinite(v) for v in bf16)
    assert abs(bf16[0] - fp32[0]) < 0.05 * fp32[0]  # same model and data, rounding only
    assert bf16[-1] < bf16[0]


def test_throughput_report_shows_the_codec_share_of_a_step(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "res")
    steps = [
        {
            "trial_id": "t",
            "step": s,
            "stage": st,
            "loss": None,
            "tokens": 10,
            "start": float(s),
            "end": s + 1.0,
            "encode_s": 0.1 * (st + 1),
            "decode_s": 0.05,
        }
        for s in range(4)
        for st in range(2)
    ]
    store.append("steps", steps)
    store.append(
        "trials",
        [
            {
                "trial_id": "t",
                "execution": "distributed",
                "status": "ok",
                "compressor": "none",
                "rate": None,
                "mode": "train",
                "tokens_per_s": 10.0,
                "codec": "modeled",
            }
        ],
    )
    row = throughput_summary(load(store.root)).iloc[0]
    assert row["codec"] == "modeled"
    assert row["codec_s"] == pytest.approx(0.25)  # the busiest stage: 0.2 + 0.05 per step
    assert row["codec_share"] == pytest.approx(0.25 / row["step_s"])


@needs_netns
@pytest.mark.netns
def test_a_modeled_codec_charges_its_model_over_the_real_links(tmp_path: Path) -> None:
    """compute.codec: modeled on a profile with a slow memory (1 MB/s): every encode/decode
    after the first payload of a direction costs (dense + payload bytes) / bandwidth."""
    profile = tmp_path / "slowmem.yaml"
    profile.write_text(yaml.safe_dump({"name": "slowmem", "flops_per_s": 1e12, "mem_bandwidth": 1e6}))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump({**TINY, "compute": {"mode": "modeled", "profile": str(profile), "codec": "modeled"}})
    )
    out = tmp_path / "out"
    r = pipenem("train", str(cfg), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    spec = _spec()
    dense = spec.train.batch // spec.train.micro_batches * spec.model.ctx * spec.model.d_model * 4
    per_message = 2 * dense / 1e6  # dense in + about as many payload bytes out (`none`), at 1 MB/s
    steps = json.loads((out / "stage0.json").read_text())["steps"][1:]
    for row in steps:  # stage 0: M forward encodes and M backward decodes per step
        assert 1.0 <= row["encode_s"] / (spec.train.micro_batches * per_message) < 1.2, row
        assert 1.0 <= row["decode_s"] / (spec.train.micro_batches * per_message) < 1.2, row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["codec"] == "modeled" and summary["device"] == "slowmem"
