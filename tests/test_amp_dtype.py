"""Autocast picks bf16 only where the GPU computes it natively: a Colab T4 (compute capability 7.5) gets fp16.

Recent torch's ``torch.cuda.is_bf16_supported()`` is True on a T4 because bf16 can be *emulated* there, which
is far slower than fp16 on its tensor cores; the gpu profile's times assume fp16 on a T4.
"""

import torch

from resnet_tutorial.training import amp_settings


def test_a_t4_trains_in_fp16_and_an_ampere_gpu_in_bf16(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert amp_settings("auto", cuda) == (True, torch.float16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert amp_settings("auto", cuda) == (True, torch.bfloat16)
    assert amp_settings(False, cuda) == (False, torch.bfloat16)


def test_the_cpu_autocasts_to_bf16_only_when_asked():
    assert amp_settings("auto", torch.device("cpu")) == (False, torch.bfloat16)
    assert amp_settings(True, torch.device("cpu")) == (True, torch.bfloat16)
