"""Instance encoders used by the study designs, with configurable width and depth.

Every encoder maps a batch of instances to feature vectors,
``(N, C, *spatial) -> (N, out_features)``, and exposes ``cam_layer``: the module
whose output is the last spatial feature map (the target of Grad-CAM). Every
encoder pools that map either by its global mean or by its mean and SD over the
ROI together with its global mean (:func:`roi_statistics_pool`, ``pool="roi_stats"``);
the ROI is the instance's last channel.

* :class:`ResNet18` -- basic-block ResNet (He et al. 2016), 2D.
* :class:`SEResNeXt` -- grouped-convolution bottlenecks (Xie et al. 2017) with
  squeeze-and-excitation (Hu et al. 2018), 2D.
* :class:`EfficientNetLite0` -- inverted-residual MBConv blocks, ReLU6 and no
  squeeze-and-excitation (the "lite" variant of Tan & Le 2019), 2D, 3-channel
  input by default (PET, CT, ROI).
* :class:`UNet3D` -- 3D U-Net (Cicek et al. 2016) for segmentation;
  :class:`UNetEncoder` pools its bottleneck for a risk head, and
  :class:`MultiSequenceEncoder` concatenates one encoder per sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


POOLS = ("mean", "roi_stats")


def roi_statistics_pool(features: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of each feature map over a soft ROI, and its
    mean over the whole crop.

    .. math::
        \\mu_c = \\sum_p w_p f_c(p), \\qquad
        \\sigma_c = \\Big(\\sum_p w_p (f_c(p) - \\mu_c)^2 + 10^{-4}\\Big)^{1/2},
        \\qquad w_p = r_p / \\textstyle\\sum_q r_q, \\qquad
        \\bar f_c = \\frac{1}{|P|} \\sum_p f_c(p),

    over the positions :math:`p \\in P` of a 2D or 3D map, with :math:`r` the ROI
    resampled to the map by area averaging. The SD of
    filter responses over the tumour is what grey-level texture statistics
    measure, and restricting both moments to the ROI keeps the surrounding
    tissue out of them. Mean-and-SD ("statistics") pooling is that of x-vector
    networks (Snyder et al. 2018, ICASSP); like orderless texture encodings
    (Zhang et al. 2017, Deep TEN, CVPR) it discards where a response occurs.
    The whole-crop mean :math:`\\bar f_c` (global average pooling) keeps what
    the ROI moments normalize away: the tumour's extent within the crop and its
    margin with the surrounding tissue.

    Parameters
    ----------
    features : Tensor, shape (N, F, h, w) or (N, F, d, h, w)
    roi : Tensor, shape (N, 1, H, W) or (N, 1, D, H, W)
        ROI membership (0-1) of each instance, at the input resolution.

    Returns
    -------
    Tensor, shape (N, 3F): the ROI means, the ROI SDs, then the crop means.
    """
    if roi.ndim != features.ndim or roi.shape[1] != 1 or features.ndim not in (4, 5):
        raise ValueError(f"roi: expected (N, 1, *spatial) for features {tuple(features.shape)}, "
                         f"got {tuple(roi.shape)}")
    area_pool = (nn.functional.adaptive_avg_pool2d if features.ndim == 4
                 else nn.functional.adaptive_avg_pool3d)
    dims = tuple(range(2, features.ndim))
    r = area_pool(roi.clamp_min(0), features.shape[2:])
    w = r / r.sum(dim=dims, keepdim=True).clamp_min(1e-3)
    mean = (features * w).sum(dim=dims, keepdim=True)
    var = ((features - mean) ** 2 * w).sum(dim=dims)
    return torch.cat([mean.flatten(1), torch.sqrt(var + 1e-4), features.mean(dim=dims)], dim=1)


class _Pooled(nn.Module):
    """An encoder's pooling: global mean, or ROI statistics of the last input channel."""

    def _set_pool(self, pool: str, channels: int) -> None:
        if pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.out_features = channels * (3 if pool == "roi_stats" else 1)

    def _pool(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "roi_stats":
            return roi_statistics_pool(features, x[:, -1:])
        return features.mean(dim=tuple(range(2, features.ndim)))


def _stem(in_channels: int, width: int, stem: str) -> nn.Sequential:
    if stem == "imagenet":  # 7x7 stride 2 + max pool: /4
        return nn.Sequential(_conv_bn(in_channels, width, 7, 2), nn.MaxPool2d(3, 2, 1))
    if stem == "small":  # 3x3 stride 1: keeps the resolution of small crops
        return _conv_bn(in_channels, width, 3, 1)
    raise ValueError(f"stem: expected 'imagenet' or 'small', got {stem!r}")


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), _conv_bn(cout, cout, 3, act=None))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else _conv_bn(cin, cout, 1, stride, act=None))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


def _residual_stages(block: Callable[[int, int, int], nn.Module], cin: int, width: int,
                     layers: Sequence[int]) -> tuple[nn.Sequential, int]:
    """Stages of residual blocks: stage ``s`` has ``layers[s]`` blocks of ``width * 2**s``
    channels, the first of each stage after the first striding by 2.

    Returns the stages and their output channels.
    """
    stages = []
    for s, n in enumerate(layers):
        cout = width * 2 ** s
        stages.append(nn.Sequential(*[block(cin if b == 0 else cout, cout,
                                            2 if (b == 0 and s > 0) else 1)
                                      for b in range(n)]))
        cin = cout
    return nn.Sequential(*stages), cin


class ResNet18(_Pooled):
    """ResNet with basic blocks; ``layers=(2, 2, 2, 2)`` and ``width=64`` is ResNet-18.

    Parameters
    ----------
    in_channels : int
    width : int
        Channels of the first stage; stage ``s`` has ``width * 2**s``.
    layers : sequence of int
        Blocks per stage (its length is the number of stages).
    stem : {"imagenet", "small"}
    pool : {"mean", "roi_stats"}
        Global mean of the last map, or its ROI mean and SD plus its global
        mean (the last input channel is the ROI; three times the features).
    """

    def __init__(self, in_channels: int = 1, width: int = 64,
                 layers: Sequence[int] = (2, 2, 2, 2), stem: str = "imagenet",
                 pool: str = "mean") -> None:
        super().__init__()
        self.stem = _stem(in_channels, width, stem)
        self.stages, channels = _residual_stages(_BasicBlock, width, width, layers)
        self._set_pool(pool, channels)
        self.cam_layer = self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.stages(self.stem(x)), x)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class _SEXBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, cardinality: int,
                 reduction: int) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(_conv_bn(cin, mid, 1), _conv_bn(mid, mid, 3, stride, cardinality),
                                  _conv_bn(mid, cout, 1, act=None), _SqueezeExcite(cout, reduction))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else _conv_bn(cin, cout, 1, stride, act=None))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class SEResNeXt(_Pooled):
    """SE-ResNeXt: bottlenecks with grouped 3x3 convolutions and squeeze-and-excitation.

    ``width=256, layers=(3, 4, 6, 3), cardinality=32`` is SE-ResNeXt-50 (32x4d).

    Parameters
    ----------
    in_channels : int
    width : int
        Output channels of the first stage (doubles per stage); the bottleneck
        has half as many, split in ``cardinality`` groups.
    layers : sequence of int
    cardinality : int
        Number of groups; must divide ``width / 2``.
    reduction : int
        Squeeze-and-excitation reduction ratio.
    stem : {"imagenet", "small"}
    pool : {"mean", "roi_stats"}
        As in :class:`ResNet18`.
    """

    def __init__(self, in_channels: int = 1, width: int = 256,
                 layers: Sequence[int] = (3, 4, 6, 3), cardinality: int = 32,
                 reduction: int = 16, stem: str = "imagenet", pool: str = "mean") -> None:
        super().__init__()
        if (width // 2) % cardinality:
            raise ValueError(f"cardinality: {cardinality} must divide width/2 = {width // 2}")
        stem_width = max(width // 4, 8)
        self.stem = _stem(in_channels, stem_width, stem)
        self.stages, channels = _residual_stages(
            lambda cin, cout, stride: _SEXBlock(cin, cout, stride, cardinality, reduction),
            stem_width, width, layers)
        self._set_pool(pool, channels)
        self.cam_layer = self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.stages(self.stem(x)), x)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, mid, 1, act=nn.ReLU6)]
        layers += [_conv_bn(mid, mid, kernel, stride, groups=mid, act=nn.ReLU6),
                   _conv_bn(mid, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


# (expansion, channels, repeats, stride, kernel) of EfficientNet-B0 / lite0
_EFFNET_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                  (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


def _round_channels(c: float, divisor: int = 8) -> int:
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


class EfficientNetLite0(_Pooled):
    """EfficientNet-lite0: MBConv blocks, ReLU6, no squeeze-and-excitation.

    Parameters
    ----------
    in_channels : int
        3 for PET, CT and ROI channels stacked.
    width_mult, depth_mult : float
        Channel and repeat multipliers (1.0, 1.0 is lite0).
    n_stages : int
        How many of the seven MBConv stages to keep (fewer for small crops).
    head_channels : int
        Channels of the final 1x1 convolution (1280 in lite0).
    pool : {"mean", "roi_stats"}
        As in :class:`ResNet18`.
    """

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0, depth_mult: float = 1.0,
                 n_stages: int = 7, head_channels: int = 1280, pool: str = "mean") -> None:
        super().__init__()
        if not 1 <= n_stages <= len(_EFFNET_STAGES):
            raise ValueError(f"n_stages: must be in 1..{len(_EFFNET_STAGES)}, got {n_stages}")
        stem_c = 32  # lite keeps stem and head fixed
        self.stem = _conv_bn(in_channels, stem_c, 3, 2, act=nn.ReLU6)
        blocks, cin = [], stem_c
        for expand, c, reps, stride, k in _EFFNET_STAGES[:n_stages]:
            cout = _round_channels(c * width_mult)
            for r in range(max(1, math.ceil(reps * depth_mult))):
                blocks.append(_MBConv(cin, cout, expand, k, stride if r == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, head_channels, 1, act=nn.ReLU6)
        self._set_pool(pool, head_channels)
        self.cam_layer = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.head(self.blocks(self.stem(x))), x)


NORMS3D: dict[str, Callable[[int], nn.Module]] = {
    "instance": lambda c: nn.InstanceNorm3d(c, affine=True),
    "batch": nn.BatchNorm3d,
}


def _double_conv3d(cin: int, cout: int, norm: str, in_plane: bool = False) -> nn.Sequential:
    """Two convolutions, each normalised and LeakyReLU'd: 3x3x3, or 1x3x3 (``in_plane``)."""
    k, pad = ((1, 3, 3), (0, 1, 1)) if in_plane else (3, 1)
    return nn.Sequential(nn.Conv3d(cin, cout, k, padding=pad, bias=False),
                         NORMS3D[norm](cout), nn.LeakyReLU(0.01, inplace=True),
                         nn.Conv3d(cout, cout, k, padding=pad, bias=False),
                         NORMS3D[norm](cout), nn.LeakyReLU(0.01, inplace=True))


class UNet3D(nn.Module):
    """3D U-Net: ``depth`` down-sampling levels, skip connections, segmentation logits.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in; segmentation classes out (sigmoid per channel).
    width : int
        Channels of the first level (doubles per level).
    depth : int
        Number of 2x down-samplings; spatial sizes must be divisible by ``2**depth``.
    norm : {"instance", "batch"}
        Normalisation after each convolution. Instance norm (nnU-Net's choice for
        segmentation) standardises every feature map per image, which removes a
        patch's contrast and texture amplitude from the pooled bottleneck; batch
        norm keeps the differences between patients that a risk head needs.
    in_plane_levels : int
        The first levels that convolve (1x3x3) and down-sample (1x2x2) within each
        section only, as nnU-Net does for images whose sections lie at least twice as
        far apart as their pixels: those levels see each acquired section's own
        texture, which does not depend on the slice thickness of a center.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16,
                 depth: int = 4, norm: str = "instance", in_plane_levels: int = 0) -> None:
        super().__init__()
        if norm not in NORMS3D:
            raise ValueError(f"norm: expected one of {sorted(NORMS3D)}, got {norm!r}")
        if not 0 <= in_plane_levels <= depth:
            raise ValueError(f"in_plane_levels: expected 0..depth ({depth}), "
                             f"got {in_plane_levels}")
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.in_plane_levels = in_plane_levels
        flat = [i < in_plane_levels for i in range(depth)]
        self.pool_sizes = [(1, 2, 2) if f else (2, 2, 2) for f in flat]
        self.down = nn.ModuleList([_double_conv3d(in_channels if i == 0 else chans[i - 1],
                                                  chans[i], norm, flat[i])
                                   for i in range(depth)])
        self.bottleneck = _double_conv3d(chans[depth - 1], chans[depth], norm)
        self.up = nn.ModuleList([nn.ConvTranspose3d(chans[i + 1], chans[i], self.pool_sizes[i],
                                                    stride=self.pool_sizes[i])
                                 for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_double_conv3d(2 * chans[i], chans[i], norm, flat[i])
                                  for i in reversed(range(depth))])
        self.seg_head = nn.Conv3d(chans[0], out_channels, 1)
        self.bottleneck_channels = chans[depth]

    def _check(self, x: torch.Tensor) -> None:
        f = [math.prod(p[a] for p in self.pool_sizes) for a in range(3)]
        if x.ndim != 5 or any(s % k for s, k in zip(x.shape[2:], f, strict=True)):
            raise ValueError(f"input: expected (N, C, D, H, W) with D, H, W divisible by "
                             f"{tuple(f)}, got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Bottleneck feature map and the skip tensors of each level."""
        self._check(x)
        skips = []
        for block, size in zip(self.down, self.pool_sizes, strict=True):
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool3d(x, size)
        return self.bottleneck(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encode(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.seg_head(x)


class UNetEncoder(_Pooled):
    """A U-Net's encoder as an instance encoder: its pooled bottleneck.

    With ``pool="roi_stats"`` the instance's last channel is the ROI: it weights
    the pooling (:func:`roi_statistics_pool`) and is not an input of the U-Net,
    which must find the tumour in the image to segment it.
    """

    def __init__(self, unet: UNet3D, pool: str = "mean") -> None:
        super().__init__()
        self.unet = unet
        self._set_pool(pool, unet.bottleneck_channels)
        self.cam_layer = unet.bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, :-1] if self.pool == "roi_stats" else x
        return self._pool(self.unet.encode(image)[0], x)


class MultiSequenceEncoder(nn.Module):
    """One encoder per input channel (sequence); pooled features concatenated.

    Input ``(N, S, *spatial)``; sequence ``s`` goes to ``encoders[s]`` as a
    one-channel image. Encoders that pool over an ROI (``pool="roi_stats"``)
    take input ``(N, S + 1, *spatial)`` whose last channel is the ROI, and each
    gets its sequence with the ROI. Output ``(N, sum of out_features)``.
    """

    def __init__(self, encoders: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.out_features = sum(e.out_features for e in encoders)
        self.cam_layer = encoders[0].cam_layer
        self.roi = getattr(encoders[0], "pool", "mean") == "roi_stats"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.encoders)
        if x.shape[1] != n + self.roi:
            raise ValueError(f"input: {x.shape[1]} channels for {n} sequences"
                             + (" and the ROI" if self.roi else ""))
        roi = [x[:, -1:]] if self.roi else []
        return torch.cat([enc(torch.cat([x[:, s:s + 1], *roi], dim=1))
                          for s, enc in enumerate(self.encoders)], dim=1)


def _unet_encoder(in_channels: int = 1, width: int = 16, depth: int = 4,
                  norm: str = "instance", pool: str = "mean",
                  in_plane_levels: int = 0) -> UNetEncoder:
    return UNetEncoder(UNet3D(in_channels, 1, width, depth, norm, in_plane_levels), pool)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "se_resnext": SEResNeXt,
    "efficientnet_lite0": EfficientNetLite0,
    "unet3d": _unet_encoder,
}


def build_backbone(name: str, in_channels: int = 1, sequences: int = 1,
                   **kwargs) -> nn.Module:
    """An instance encoder by name (see :data:`BACKBONES`).

    ``sequences > 1`` builds one encoder per sequence (``in_channels`` each) and
    concatenates their features (:class:`MultiSequenceEncoder`).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone: unknown name {name!r}; known: {sorted(BACKBONES)}")
    if sequences > 1:
        return MultiSequenceEncoder([BACKBONES[name](in_channels=in_channels, **kwargs)
                                     for _ in range(sequences)])
    return BACKBONES[name](in_channels=in_channels, **kwargs)
