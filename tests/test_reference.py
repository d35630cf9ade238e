"""The pure-PyTorch BatchNorm+ReLU every Triton kernel is checked against (kernels/reference.py), itself against
nn.BatchNorm2d + ReLU: outputs and running statistics in training and evaluation, PyTorch's refusal of one value
per channel, and the input's dtype kept (statistics in fp32 for a bf16 input)."""
import pytest
import torch
from torch import nn

from kernels.reference import bn_relu_reference


def batchnorm(c: int, dtype=torch.float64) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, momentum=0.3, eps=1e-3).to(dtype)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    return bn


@pytest.mark.parametrize("training", [True, False])
def test_reference_matches_batchnorm_and_relu_with_running_stats(training):
    bn = batchnorm(5)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64) * 3 + 2  # a mean far from 0
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    y = bn_relu_reference(x, bn.weight, bn.bias, mean, var, training, bn.momentum, bn.eps)
    expected = torch.relu(bn.train(training)(x))  # updates bn's running stats in training
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, bn.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, bn.running_var, rtol=1e-12, atol=1e-12)  # unbiased into running_var
    assert y.dtype == torch.float64 and (y >= 0).all() and (y == 0).any()


def test_one_value_per_channel_is_refused_like_pytorch():
    bn = batchnorm(4)
    x = torch.randn(1, 4, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.train()(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn_relu_reference(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, 0.1, 1e-5)


def test_a_bf16_input_keeps_its_dtype_and_is_normalised_in_fp32():
    bn = batchnorm(3, torch.float32)
    x = (torch.randn(4, 3, 5, 5) * 3 + 2).to(torch.bfloat16)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    y = bn_relu_reference(x, bn.weight, bn.bias, mean, var, True, bn.momentum, bn.eps)
    expected = torch.relu(bn.train()(x.float()))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2)  # one bf16 rounding of the output
    torch.testing.assert_close(mean, bn.running_mean)  # statistics of the same bf16 values, in fp32
    torch.testing.assert_close(var, bn.running_var)
