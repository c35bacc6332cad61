"""Autocast picks bf16 only where the GPU computes it natively: a Colab T4 (compute capability 7.5) gets fp16.

Recent torch's ``torch.cuda.is_bf16_supported()`` is True on a T4 because bf16 can be *emulated* there, which
is far slower than fp16 on its tensor cores; the gpu profile's times assume fp16 on a T4.
"""

import platform

import pytest
import torch

from resnet_tutorial.errors import ConfigError
from resnet_tutorial.runtime import cpu_bf16_native, describe_environment
from resnet_tutorial.training import Recipe, amp_settings


def test_a_t4_trains_in_fp16_and_an_ampere_gpu_in_bf16(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert amp_settings("auto", cuda) == (True, torch.float16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert amp_settings("auto", cuda) == (True, torch.bfloat16)
    assert amp_settings(False, cuda) == (False, torch.bfloat16)


def test_the_cpu_autocasts_to_bf16_on_auto_only_where_it_computes_bf16_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("RESNET_TUTORIAL_CPU_BF16", "0")  # most Colab CPUs: bf16 would be emulated, slower
    assert amp_settings("auto", cpu) == (False, torch.bfloat16)
    assert amp_settings(True, cpu) == (True, torch.bfloat16)  # asked for: on, even emulated
    monkeypatch.setenv("RESNET_TUTORIAL_CPU_BF16", "1")  # AVX-512 BF16 or AMX
    assert amp_settings("auto", cpu) == (True, torch.bfloat16)
    assert amp_settings(False, cpu) == (False, torch.bfloat16)
    assert "bf16 native: autocast on" in describe_environment(cpu)
    monkeypatch.setenv("RESNET_TUTORIAL_CPU_BF16", "yes")
    with pytest.raises(ConfigError, match="must be 0 or 1"):
        amp_settings("auto", cpu)


def test_native_bf16_follows_the_kernels_torch_runs(monkeypatch):
    monkeypatch.delenv("RESNET_TUTORIAL_CPU_BF16", raising=False)
    caps = torch.cpu.get_capabilities()
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16")) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert cpu_bf16_native() == (native and torch.backends.cpu.get_cpu_capability().startswith("AVX512"))
    # an AVX2 build of the kernels (ATEN_CPU_CAPABILITY=avx2, as the sweep runs it) has no bf16 instructions
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert not cpu_bf16_native()
        assert "no native bf16: autocast off" in describe_environment(torch.device("cpu"))


def test_evaluate_in_fits_precision_reproduces_fits_accuracy(monkeypatch):
    from resnet_tutorial.data import load_dataset
    from resnet_tutorial.evaluation import evaluate
    from resnet_tutorial.models import create_model
    from resnet_tutorial.training import fit

    monkeypatch.setenv("RESNET_TUTORIAL_CPU_BF16", "1")
    data = load_dataset("digits").subset(n_per_class=8, test_per_class=20)
    torch.manual_seed(0)
    model = create_model("resnet20", channels=(4, 8, 16), in_chans=1, num_classes=10)
    history = fit(model, data, Recipe(epochs=1, batch_size=32, amp="auto"), progress=False)
    assert history.config["amp"] is True
    in_bf16 = evaluate(model, data, amp=history.config["amp"]).accuracy
    assert in_bf16 == history.final["test_acc"]
    logits32 = evaluate(model, data).probabilities
    logits16 = evaluate(model, data, amp=True).probabilities
    assert not torch.equal(logits32, logits16)  # float32 by default: another computation
    torch.testing.assert_close(logits16, logits32, atol=2e-2, rtol=0)
