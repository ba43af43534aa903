"""What every model shares: named feature read-out, input checks, initialisation.

A model subclasses :class:`FeatureModel`, sets the class attributes ``modality``,
``feature_names`` and ``default_feature``, and implements :meth:`FeatureModel._features`,
a generator that yields ``(name, tensor)`` for every name in ``feature_names``, in order.
``forward`` stops pulling from that generator as soon as it holds every requested feature,
so asking for an early layer (``"conv1"``) never pays for the later ones (as RotNet's
AlexNet does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar, Union

import torch
from torch import Tensor, nn

#: What ``forward``'s ``out_feat_keys`` accepts: None (logits), one name, or several names.
FeatureKeys = Union[None, str, Sequence[str]]

#: Modalities a model can declare.
RASTER = "raster"
STROKE = "stroke"

#: Columns of a stroke tensor (B, L, 4): x, y, p1 (pen down), p2 (pen lifted after point).
STROKE_COLUMNS = 4


class FeatureModel(nn.Module):
    """Base class: a network whose intermediate outputs can be read out by name.

    Class attributes a subclass must set:
        modality: ``"raster"`` (input (B, C, H, W) in [0, 1]) or ``"stroke"``
            (input (B, L, 4): x, y, p1, p2; all-zero rows are padding).
        feature_names: every name ``forward`` can return, in the order they are computed;
            the last one is ``"classifier"`` (the logits). Models whose depth is a
            constructor parameter set the class attribute for their default depth and
            overwrite it per instance.
        default_feature: the layer used as the representation for retrieval.
        min_side: the smallest raster side (px) the network accepts (raster models).
    """

    modality: ClassVar[str]
    feature_names: tuple[str, ...]
    default_feature: ClassVar[str]
    min_side: ClassVar[int] = 1
    # Only raster models read this; stroke models always take 4 columns.
    in_channels: int = 3

    def forward(self, x: Tensor, out_feat_keys: FeatureKeys = None) -> Tensor | list[Tensor]:
        """Run the network up to the last requested feature.

        Args:
            x: raster (B, C, H, W) float in [0, 1], or stroke (B, L, 4) float.
            out_feat_keys: None -> logits (B, num_classes); a name -> that feature tensor;
                a list/tuple of names -> a list of tensors in the requested order.

        Returns:
            One tensor, or a list of tensors (see ``out_feat_keys``).

        Raises:
            ValueError: on an unknown feature name or an input of the wrong shape.
        """
        keys, single = self._parse_keys(out_feat_keys)
        x = self._check_input(x)
        wanted = set(keys)
        found: dict[str, Tensor] = {}
        for name, feat in self._features(x):
            if name in wanted:
                found[name] = feat
                if len(found) == len(wanted):
                    break
        missing = wanted.difference(found)
        if missing:  # a subclass whose _features disagrees with feature_names
            raise RuntimeError(f"{type(self).__name__} did not produce features {sorted(missing)}")
        if single:
            return found[keys[0]]
        return [found[k] for k in keys]

    def _features(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(name, tensor)`` for each of ``feature_names`` in order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _parse_keys(self, out_feat_keys: FeatureKeys) -> tuple[list[str], bool]:
        """Return (requested names, whether a single tensor is to be returned)."""
        owner = type(self).__name__
        if out_feat_keys is None:
            return [self.feature_names[-1]], True
        if isinstance(out_feat_keys, str):
            keys, single = [out_feat_keys], True
        elif isinstance(out_feat_keys, (list, tuple)):
            keys, single = list(out_feat_keys), False
            if not keys:
                raise ValueError(f"{owner}: out_feat_keys is empty; valid: {', '.join(self.feature_names)}")
        else:
            raise ValueError(
                f"{owner}: out_feat_keys must be None, a str or a list/tuple of str, "
                f"got {type(out_feat_keys).__name__}"
            )
        for key in keys:
            if not isinstance(key, str) or key not in self.feature_names:
                raise ValueError(
                    f"{owner}: unknown feature {key!r}; valid: {', '.join(self.feature_names)}"
                )
        return keys, single

    def _check_input(self, x: Tensor) -> Tensor:
        """Validate ``x`` for this model's modality; a 1-channel raster may be widened."""
        owner = type(self).__name__
        if not isinstance(x, Tensor):
            raise ValueError(f"{owner}: expected a tensor, got {type(x).__name__}")
        if self.modality == RASTER:
            if x.dim() != 4:
                raise ValueError(f"{owner}: expected raster input (B, C, H, W), got shape {tuple(x.shape)}")
            channels = x.shape[1]
            if channels == self.in_channels:
                return x
            # Sketches are grey-scale; the paper feeds three identical channels. Expanding is a
            # view, so a 1-channel loader costs nothing extra.
            if channels == 1 and self.in_channels == 3:
                return x.expand(-1, 3, -1, -1)
            raise ValueError(
                f"{owner}: input has {channels} channels, model expects {self.in_channels}"
                + (" (or 1, which is repeated)" if self.in_channels == 3 else "")
            )
        if self.modality == STROKE:
            if x.dim() != 3 or x.shape[-1] != STROKE_COLUMNS:
                raise ValueError(
                    f"{owner}: expected stroke input (B, L, {STROKE_COLUMNS}), got shape {tuple(x.shape)}"
                )
            return x
        raise RuntimeError(f"{owner}: unknown modality {self.modality!r}")


def stroke_valid_mask(x: Tensor) -> Tensor:
    """Which rows of a stroke tensor are real points.

    Args:
        x: (B, L, 4) with columns x, y, p1, p2.

    Returns:
        (B, L) bool, True where p1 + p2 > 0. Padding rows are all zero, and every real point
        has exactly one pen state set, so the pen columns tell them apart even when a point
        sits at the origin.
    """
    return (x[..., 2] + x[..., 3]) > 0


def init_weights(module: nn.Module, linear_std: float = 0.01) -> None:
    """RotNet-style initialisation, applied to every submodule of ``module``.

    Convolutions: Kaiming normal with fan_out (He et al. 2015; what RotNet's
    ``n = k*k*out_channels`` normal init computes), zero bias. Batch norms: weight 1, bias 0.
    Linear layers: normal(0, ``linear_std``), zero bias. We use 0.01 rather than PyTorch's
    fan_in-dependent uniform default because (a) every hidden Linear here is followed by a
    batch norm, so its scale only sets the step size and need not depend on fan_in, and
    (b) for the classifier it makes the initial logits small, so the first loss is close to
    log(num_classes) whatever the width of the feature feeding it (same choice as
    torchvision's AlexNet/VGG classifiers).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif getattr(m, "weight", None) is not None and _is_norm(m):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _is_norm(m: nn.Module) -> bool:
    # Our masked batch norm is not a torch _BatchNorm subclass (see dilated_tcn.py), so
    # recognise it by its buffers as well.
    return isinstance(m, nn.modules.batchnorm._NormBase) or hasattr(m, "running_mean")


# ---------------------------------------------------------------------- parameter checks
def check_positive_int(owner: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int > 0 (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


def check_positive_ints(owner: str, name: str, value: object) -> tuple[int, ...]:
    """Return ``value`` as a non-empty tuple of positive ints, else raise ValueError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{owner}: {name} must be a non-empty sequence of positive ints, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{owner}: {name} must contain positive ints, got {value!r}")
    return tuple(value)


def masked_amax(h: Tensor, keep: Tensor) -> Tensor:
    """Max over time of the kept steps; 0 where a row keeps no step.

    Args:
        h: (B, C, T) features.
        keep: (B, T) bool.

    Returns:
        (B, C).
    """
    any_kept = keep.any(dim=1, keepdim=True)  # (B, 1)
    filled = h.masked_fill(~keep.unsqueeze(1), float("-inf"))
    return torch.where(any_kept, filled.amax(dim=2), torch.zeros((), dtype=h.dtype, device=h.device))
