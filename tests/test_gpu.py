"""The paths only a CUDA device takes: fp16 with the GradScaler, bf16 autocast, CUDA RNG states, inductor,
`--half` export, and validation / predict equal to the CPU's. Marked `gpu`: skipped without CUDA
(`pytest -m gpu` runs them on a GPU machine; `benchmarks/gpu.sh` does so first)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import accelyolo
from accelyolo.commands.fit import fit
from tests.conftest import TINY_ANCHOR_FREE, tiny_train_options
from tests.test_trainer import RecordSteps as TrainerRecordSteps

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

REPO = Path(__file__).resolve().parents[1]


class RecordSteps(TrainerRecordSteps):
    """The trainer tests' recorder (losses and LRs per step, stop after an epoch), plus the device, the
    GradScaler, its skipped and taken optimizer steps, the EMA's update count and the scaler state at a stop."""

    def __init__(self, stop_after_epoch: int | None = None) -> None:
        super().__init__(stop_after_epoch)
        self.skipped = self.taken = 0

    def on_fit_start(self, trainer):
        self.device = trainer.accelerator.device
        self.scaler = trainer.accelerator.scaler
        self.fused = trainer.optimizer.optimizer.defaults.get("fused")  # Accelerate wraps the optimizer
        self.scale = self.scaler.get_scale() if self.scaler is not None else None

    def on_step_end(self, trainer, step):
        super().on_step_end(trainer, step)
        if step.optimizer_step:
            # the scaler lowers its scale exactly after a step it skipped (an overflow); Accelerate's own
            # flag (did optimizer.step run?) cannot see the skips of a fused optimizer
            scale = self.scaler.get_scale() if self.scaler is not None else None
            if scale is not None and scale < self.scale:
                self.skipped += 1
            else:
                self.taken += 1
            self.scale = scale

    def on_epoch_end(self, trainer, row):
        self.ema_updates = trainer.ema.updates
        if row["epoch"] == self.stop_after_epoch:
            self.scaler_at_stop = trainer.accelerator.scaler.state_dict()
        super().on_epoch_end(trainer, row)


def _tensor_keys(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    floats = [k for k, v in before.items() if v.is_floating_point()]
    changed = [k for k in floats if not torch.equal(before[k].cpu(), after[k].cpu())]
    return len(changed) / len(floats)


def _start_weights(tmp_path: Path) -> tuple[dict[str, torch.Tensor], str]:
    from accelyolo.families import build_model
    from accelyolo.weights.checkpoint import save_checkpoint

    initial = build_model(TINY_ANCHOR_FREE, nc=4).state_dict()
    return initial, str(save_checkpoint(tmp_path / "start.safetensors", model_state=initial))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_trains_on_cuda(tiny_demo, tmp_path, precision):
    from accelyolo.weights.checkpoint import load_checkpoint_bundle

    initial, start = _start_weights(tmp_path)
    record = RecordSteps()
    # nbs = batch: an optimizer step per batch (12), so that some are taken after the GradScaler has
    # skipped the first ones (its scale starts at 65536 and halves on each overflow)
    options = tiny_train_options(tiny_demo, tmp_path, mixed_precision=precision, weights=start, nbs=8)
    result = fit(callbacks=[record], **options)
    assert record.device.type == "cuda" and record.fused  # one kernel per group and step on a GPU
    assert record.steps and all(math.isfinite(v) for _, _, losses, _ in record.steps for v in losses)
    assert record.taken + record.skipped == len(record.steps) and record.taken > 0, (record.taken, record.skipped)
    bundle = load_checkpoint_bundle(result.last_checkpoint)
    assert _changed_fraction(initial, bundle.model_state) > 0.5  # trained, not just loaded
    assert all(torch.isfinite(v).all() for v in bundle.model_state.values() if v.is_floating_point())
    # the EMA follows the optimizer steps that were taken, never the ones the GradScaler skipped
    assert record.ema_updates == record.taken and record.taken > 0
    if precision == "fp16":  # the GradScaler's state travels in the bundle (its numbers in the manifest)
        assert record.scaler is not None and record.skipped > 0  # a scale of 65536 overflows at the start
        assert bundle.scaler_state["scale"] == pytest.approx(float(record.scaler.get_scale()))
        assert bundle.scaler_state["scale"] < 65536.0  # halved for each skipped step
    else:
        assert record.scaler is None and not bundle.scaler_state  # bf16 needs no loss scaling


def test_fp16_resume_is_exact(tiny_demo, tmp_path):
    """An fp16 run stopped after epoch 1 and resumed takes the losses of one never stopped, and resumes with
    the GradScaler's scale and growth tracker where they were (deterministic algorithms on)."""
    from accelyolo.weights.checkpoint import load_checkpoint_bundle

    opts = tiny_train_options(
        tiny_demo,
        tmp_path,
        epochs=3,
        mixed_precision="fp16",
        deterministic=True,
        warmup_epochs=1.0,
        warmup_min_iters=4,
        close_mosaic=1,
        batch_size=4,
        max_steps_per_epoch=6,
    )
    straight = RecordSteps()
    fit(callbacks=[straight], **{**opts, "name": "straight"})
    first = RecordSteps(stop_after_epoch=1)
    stopped = fit(callbacks=[first], **{**opts, "name": "stopped"})
    saved = load_checkpoint_bundle(stopped.last_checkpoint).scaler_state
    assert saved["scale"] == pytest.approx(first.scaler_at_stop["scale"])
    assert saved["_growth_tracker"] == first.scaler_at_stop["_growth_tracker"]
    second = RecordSteps()
    fit(callbacks=[second], resume=str(stopped.last_checkpoint))
    assert len(straight.steps) == 18
    assert first.steps + second.steps == straight.steps  # losses and LRs, bitwise


def test_cuda_rng_state_round_trips(tmp_path):
    from accelyolo.core.rng import capture_rng_state, restore_rng_state
    from accelyolo.weights.checkpoint import load_checkpoint_bundle, save_checkpoint

    torch.cuda.manual_seed_all(123)
    state = capture_rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count() and state["cuda"][0].device.type == "cpu"
    expected = torch.rand(1000, device="cuda")
    path = save_checkpoint(tmp_path / "rng.safetensors", model_state={"w": torch.zeros(1)}, rng_states=[state])
    torch.rand(5000, device="cuda")  # move the generator on
    restore_rng_state(load_checkpoint_bundle(path).rng_states[0])
    assert torch.equal(torch.rand(1000, device="cuda"), expected)


def test_compile_with_inductor_on_cuda_saves_plain_names(tiny_demo, tmp_path):
    record = RecordSteps()
    options = tiny_train_options(tiny_demo, tmp_path, compile=True, epochs=1, max_steps_per_epoch=3)
    result = fit(callbacks=[record], **options)
    assert record.device.type == "cuda"
    assert all(math.isfinite(v) for _, _, losses, _ in record.steps for v in losses)
    keys = _tensor_keys(result.last_checkpoint)
    assert any(k.startswith("model.") for k in keys) and not any("_orig_mod" in k for k in keys)
    model, _ = accelyolo.load_checkpoint(str(result.inference_checkpoint))
    assert model.nc == 4


@pytest.fixture(scope="module")
def trained_weights(tiny_demo, tmp_path_factory) -> Path:
    """The inference bundle of a short CUDA run (a model that detects something)."""
    project = tmp_path_factory.mktemp("gpu-run")
    result = fit(**tiny_train_options(tiny_demo, project, epochs=3, mixed_precision="fp16"))
    return result.inference_checkpoint


def test_half_export_matches_fp32_export(trained_weights, tmp_path):
    pytest.importorskip("onnx")
    import onnx

    from accelyolo.commands.export import export

    full = export(trained_weights, imgsz=64, output=tmp_path / "full.onnx")
    half = export(trained_weights, imgsz=64, half=True, output=tmp_path / "half.onnx")
    dtypes = {init.data_type for init in onnx.load(str(half)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT not in dtypes
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        run = {
            name: ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
            for name, path in (("full", full), ("half", half))
        }
        ref = torch.from_numpy(run["full"].run(None, {"images": images.numpy()})[0])
        out = torch.from_numpy(run["half"].run(None, {"images": images.half().numpy()})[0]).float()
    else:  # onnxruntime without CUDA here: the same fused model in PyTorch, fp16 on CUDA against fp32
        model, _ = accelyolo.load_checkpoint(str(trained_weights))
        model = model.fuse().eval().cuda()
        with torch.no_grad():
            ref = model(images.cuda())
            ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float().cpu()
            out = model.half()(images.cuda().half())
            out = (out[0] if isinstance(out, (tuple, list)) else out).float().cpu()
    boxes, scores = ref[..., :4], ref[..., 4:]
    # fp16 keeps ~3 decimal digits: boxes (pixels) to 1 % of their largest magnitude, scores (0..1) to 0.01
    assert (out[..., :4] - boxes).abs().max() <= 0.01 * boxes.abs().max()
    assert (out[..., 4:] - scores).abs().max() <= 0.01


def _validate_in_child(weights: Path, data: Path, project: Path, cpu: bool) -> dict:
    """`accelyolo.validate` in a fresh process (the CPU run hides the GPU), its metrics as a dict."""
    code = (
        "import json, sys, accelyolo\n"
        "r = accelyolo.validate(weights=sys.argv[1], data=sys.argv[2], imgsz=64, workers=0, plots=False, "
        "project=sys.argv[3], name='v', verbose=False)\n"
        "print('METRICS ' + json.dumps({k: float(v) for k, v in r.metrics.items()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run(
        [sys.executable, "-c", code, str(weights), str(data), str(project)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("METRICS "))
    return json.loads(line[len("METRICS ") :])


def test_validation_on_cuda_equals_cpu(trained_weights, tiny_demo, tmp_path):
    on_gpu = _validate_in_child(trained_weights, tiny_demo, tmp_path / "gpu", cpu=False)
    on_cpu = _validate_in_child(trained_weights, tiny_demo, tmp_path / "cpu", cpu=True)
    assert on_gpu.keys() == on_cpu.keys() and "mAP50-95" in str(list(on_gpu))
    for key, value in on_cpu.items():  # metrics are in [0, 1]: a few boxes may flip at the thresholds
        assert on_gpu[key] == pytest.approx(value, abs=0.02), key


def test_predict_on_cuda_equals_cpu(trained_weights, tiny_demo):
    images = tiny_demo.parent / "images" / "val"
    kwargs = dict(imgsz=64, conf_thres=0.05)
    on_gpu = accelyolo.predict(weights=str(trained_weights), source=str(images), device="cuda", **kwargs)
    on_cpu = accelyolo.predict(weights=str(trained_weights), source=str(images), device="cpu", **kwargs)
    assert len(on_gpu) == len(on_cpu) > 0
    compared = 0
    for g, c in zip(on_gpu, on_cpu):
        g_boxes, c_boxes = torch.as_tensor(g.boxes).float(), torch.as_tensor(c.boxes).float()
        if g_boxes.shape != c_boxes.shape:  # a detection at the threshold may flip; the rest must agree
            continue
        if len(c_boxes):
            scale = max(float(c_boxes.abs().max()), 1.0)
            assert (g_boxes - c_boxes).abs().max() <= 1e-3 * scale
            assert torch.allclose(torch.as_tensor(g.scores).float(), torch.as_tensor(c.scores).float(), atol=1e-3)
        compared += 1
    assert compared >= 0.8 * len(on_cpu)
