"""The LVT U-Net: an nnU-Net-style 3D U-Net built from a small, validated configuration.

conv-norm-LeakyReLU blocks, strided-conv downsampling, transposed-conv upsampling, instance norm
(batch norm and a residual encoder as options). Deep-supervision heads are always built so that one
checkpoint serves training and inference; the flag only changes what ``forward`` returns.
"""

from __future__ import annotations

import torch
from torch import nn

from lvt.segment.network_config import HeadName, NetworkConfig, NormName


def _norm(norm: NormName, channels: int) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm3d(channels, eps=1e-5, affine=True)
    return nn.BatchNorm3d(channels)


class ConvNormAct(nn.Sequential):
    """3x3x3 convolution, normalisation, LeakyReLU.

    The convolution has no bias: the normalisation right after it would cancel it, leaving a
    parameter whose gradient is pure rounding noise (which Adam would amplify).
    """

    def __init__(self, in_ch: int, out_ch: int, norm: NormName, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            _norm(norm, out_ch),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two convolutions with an identity (or 1x1 projection) shortcut, as nnU-Net's ResEnc."""

    def __init__(self, in_ch: int, out_ch: int, norm: NormName, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, norm, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False), _norm(norm, out_ch))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(norm, out_ch))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


def _encoder_stage(config: NetworkConfig, in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    if config.residual_encoder:
        blocks = [ResidualBlock(in_ch, out_ch, config.norm, stride)]
        blocks += [ResidualBlock(out_ch, out_ch, config.norm) for _ in range(config.convs_per_stage // 2 - 1)]
        return nn.Sequential(*blocks)
    layers = [ConvNormAct(in_ch, out_ch, config.norm, stride)]
    layers += [ConvNormAct(out_ch, out_ch, config.norm) for _ in range(config.convs_per_stage - 1)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """3D U-Net returning logits (B, C, Z, Y, X); a list of deep-supervision logits when enabled.

    With deep supervision the list is ordered from full resolution down; entry ``d`` has spatial
    size ``input / 2**d``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.deep_supervision = False
        feats = config.features_per_stage
        self.encoder = nn.ModuleList(
            _encoder_stage(config, config.in_channels if s == 0 else feats[s - 1], feats[s], 1 if s == 0 else 2)
            for s in range(config.num_stages)
        )
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(feats[s + 1], feats[s], kernel_size=2, stride=2, bias=True)
            for s in reversed(range(config.num_stages - 1))
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(2 * feats[s], feats[s], config.norm),
                *(ConvNormAct(feats[s], feats[s], config.norm) for _ in range(config.convs_per_decoder_stage - 1)),
            )
            for s in reversed(range(config.num_stages - 1))
        )
        # heads[0] is full resolution; heads[d] sits d decoder stages below it.
        self.heads = nn.ModuleList(
            nn.Conv3d(feats[d], config.out_channels, kernel_size=1, bias=True)
            for d in range(config.deep_supervision_levels)
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs: list[torch.Tensor] = []
        n_up = len(self.decoder)
        for step, (up, block) in enumerate(zip(self.upsample, self.decoder, strict=True)):
            x = block(torch.cat((up(x), skips.pop()), dim=1))
            level = n_up - 1 - step
            if self.deep_supervision and 0 < level < len(self.heads):
                outputs.append(self.heads[level](x))
        full = self.heads[0](x)
        if not self.deep_supervision:
            return full
        return [full, *reversed(outputs)]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_network(config: NetworkConfig) -> UNet:
    """Build the U-Net for a configuration (deep supervision off: switch it on for training)."""
    return UNet(config)


def probabilities_from_logits(logits: torch.Tensor, head: HeadName) -> torch.Tensor:
    """Per-class foreground probabilities (B, 3, ...) from logits of either head.

    Sigmoid: independent probabilities. Softmax: the three foreground channels of the softmax
    (background dropped: it is 1 minus their sum), decoded by argmax, not by 0.5
    (:func:`lvt.segment.postprocess.decode_masks`).
    """
    if head == "sigmoid":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:]
