"""One-axis warps and the deformation modules built from them.

A warp of a normalised coordinate t in [0, 1] (paper / released code):

    g(t)  = 2 (b - a) t + 2a
    f(t)  = t + (lam / 2) * t * (sin g(t) - sin 2b)          f(0) = 0, f(1) = 1
    f'(t) = 1 + (lam / 2)(sin g(t) - sin 2b) + lam * t * (b - a) * cos g(t)

``AxisWarp.f`` evaluates the same function through the sum-to-product identity

    sin g(t) - sin 2b = 2 cos(a (1 - t) + b t + b) * sin((a - b)(1 - t))

so that f(0) = 0, f(1) = 1 and (for a == b or lam == 0) f(t) = t hold exactly in
floating point, not just up to rounding; the tests check the two forms agree. The
exception is a = 0, b = 1 (the released code's settings, so every named module's axes):
there g(t) = 2t, and the direct form

    f(t) = t + ((lam / 2) t) * (sin 2t - sin 2)

is already exact at both ends (g(1) = 2 exactly, so the difference is exactly 0) and
costs one sine where the product form costs a sine and a cosine (a third of the stroke
deformation views' time). The two forms round differently in float64; after the cast
to float32 that the stroke views make, they differ on 75 of the 1.07e9 float32 inputs
in [0, 1] for lam = 2.1 (all below 6.6e-8), by 1 ulp, and on none for lam = -4.1
(counted exhaustively by ``bench/warp_forms.py``).

A setting is valid when the map never folds (f' >= 0 on [0, 1]).

What the module names mean (checked numerically, see ``tests/algorithms/test_deformation.py``)
-----------------------------------------------------------------------------------
With a = 0, b = 1 the warp has one interior fixed point t* = (pi - 2) / 2 ~= 0.571
(where sin 2t = sin 2), not the centre 0.5, and f(0) = 0, f(1) = 1 always:

- lam = 2.1 ("expansion", HE/VE and the released x axis): f(t) < t on (0, t*) and
  f(t) > t on (t*, 1), so content moves away from t*. The middle is stretched (f' up to
  ~1.51 near t = 0.54) and both borders squeezed (f'(0) ~= 0.045, f'(1) ~= 0.126; the
  warp is only barely non-folding). A sketch with margins gets wider: [0.2, 0.8] ->
  [0.091, 0.876].
- lam = -4.1 ("compression", HC/VC and the released y axis): f(t) > t on (0, t*) and
  f(t) < t on (t*, 1), so content is pulled towards t*. The middle is crushed
  (f' ~= 0.0125 at t ~= 0.54, again barely non-folding) and the borders stretched
  (f'(0) ~= 2.86, f'(1) ~= 2.71). A sketch with margins gets much narrower:
  [0.2, 0.8] -> [0.413, 0.652].

So the names are honest about what happens to the extent of a sketch that has margins,
but misleading in three ways a user should know: (1) the maps are not centred on 0.5,
so the sketch also shifts (HE moves the box [0.2, 0.8] left, centre 0.5 -> 0.483; HC
moves it right, centre 0.5 -> 0.533); (2) they are not uniform scalings - locally
"expansion" squeezes the borders and "compression" stretches them; (3) a sketch that
already touches both ends of the axis keeps its extent exactly (f(0) = 0, f(1) = 1), so
on strokes normalised to fill the unit square the larger axis is never expanded or
compressed overall, only redistributed.

The paper's figure shows such modules but does not publish their settings; HE, VE, HC
and VC here reuse the released code's two one-axis settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, TypeVar

import numpy as np
import torch
from torch import Tensor

#: A warp folds when its minimum slope on [0, 1] is below ``-FOLD_TOLERANCE``. The slope
#: is evaluated in float64 (rounding ~1e-15 * (1 + |lam|)); the tolerance keeps a warp
#: whose slope only touches zero (still monotone) from being flagged by rounding, while
#: real folds (the released stroke settings reach -1.1 and -1.7) are far below it.
FOLD_TOLERANCE: float = 1e-9

#: sin 2 in float64, the constant of the direct form (``AxisWarp.f`` for a = 0, b = 1).
SIN_2: float = math.sin(2.0)

#: Default number of grid points for ``AxisWarp.min_slope`` (both endpoints included).
SLOPE_GRID: int = 10001

T = TypeVar("T", float, np.ndarray, Tensor)


def _trig(t: object) -> tuple[Callable, Callable]:
    """(sin, cos) of the library that owns t: torch for tensors, numpy otherwise."""
    if isinstance(t, Tensor):
        return torch.sin, torch.cos
    return np.sin, np.cos


def _as_input(t: T) -> T | np.ndarray:
    """Python numbers and sequences become float64 numpy values; arrays/tensors pass."""
    if isinstance(t, (Tensor, np.ndarray)):
        return t
    return np.asarray(t, dtype=np.float64)


def _as_output(t_in: object, value: object) -> object:
    """Give a Python float back for a Python number, the computed value otherwise."""
    if isinstance(t_in, (int, float)):
        return float(value)  # type: ignore[arg-type]
    return value


def _sine_difference(x, a, b, sin: Callable, cos: Callable):
    """sin g(x) - sin 2b as 2 cos(a(1-x) + bx + b) sin((a-b)(1-x)): exactly 0 at x = 1 and
    when a == b. a and b are numbers, or tensors that broadcast against x (one setting
    per plane, as in ``DeformationModule.warp_planes``): the operations are the same."""
    u = 1.0 - x
    mean = a * u + b * x + b
    return 2.0 * cos(mean) * sin((a - b) * u)


def _warp(x, lam, a, b, sin: Callable, cos: Callable):
    """f(x) = x + (lam / 2) x (sin g(x) - sin 2b) for numbers or broadcasting tensors."""
    return x + (0.5 * lam) * x * _sine_difference(x, a, b, sin, cos)


def _unit_warp(x, half_lam, sin: Callable):
    """f(x) for a = 0, b = 1 in the direct form: x + (x * (lam / 2)) * (sin 2x - sin 2).
    ``warp_planes`` makes the same operations in place, in this order (bit for bit)."""
    return x + (x * half_lam) * (sin(2.0 * x) - SIN_2)


@lru_cache(maxsize=256)
def _slope_minimum(lam: float, a: float, b: float, n: int) -> tuple[float, float]:
    """(min f', argmin t) on an n-point grid of [0, 1], refined around the grid minimum."""
    warp = AxisWarp(lam, a, b)
    grid = np.linspace(0.0, 1.0, n)
    slopes = warp.df(grid)
    i = int(np.argmin(slopes))
    # Refine between the neighbours of the grid minimum so value and location are exact
    # beyond the grid step. f' oscillates like cos(2 (b - a) t): the default 10001-point
    # grid resolves that for |b - a| up to several hundred; wilder settings need larger n.
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, n - 1)]
    fine = np.linspace(lo, hi, 1001)
    fine_slopes = warp.df(fine)
    j = int(np.argmin(fine_slopes))
    if fine_slopes[j] < slopes[i]:
        return float(fine_slopes[j]), float(fine[j])
    return float(slopes[i]), float(grid[i])


@dataclass(frozen=True)
class AxisWarp:
    """The warp f of one normalised axis, parameters (lam, a, b) as in the paper.

    ``AxisWarp()`` (all zero) is the identity. Instances are hashable, so index maps can
    be cached per warp.
    """

    lam: float = 0.0
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lam", "a", "b"):
            value = getattr(self, name)
            real = isinstance(value, (int, float, np.floating, np.integer))
            if isinstance(value, bool) or not real:
                raise ValueError(f"AxisWarp: {name} must be a real number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"AxisWarp: {name} must be finite, got {value!r}")
            object.__setattr__(self, name, value + 0.0)  # +0.0 turns -0.0 into 0.0

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_released_stroke_order(cls, lam: float, a: float, b: float) -> "AxisWarp":
        """The warp the released *stroke* code built from a triple written (lam, a, b).

        The released raster code reads the triple as (lam, a, b); the released stroke
        code reads the very same numbers as (a, b, lam). Feeding it the written triple
        (lam, a, b) therefore gives AxisWarp(lam=b, a=lam, b=a): e.g. (2.1, 0, 1) becomes
        lam = 1, a = 2.1, b = 0, a different map that folds.
        """
        return cls(lam=b, a=lam, b=a)

    # ------------------------------------------------------------------ properties
    @property
    def is_identity(self) -> bool:
        """True when f(t) = t for every t (a == b or lam == 0)."""
        return self.a == self.b or self.lam == 0.0

    @property
    def is_unit(self) -> bool:
        """True for a = 0, b = 1 (the released settings): ``f`` takes the direct form."""
        return self.a == 0.0 and self.b == 1.0

    @property
    def params(self) -> tuple[float, float, float]:
        """The triple (lam, a, b)."""
        return (self.lam, self.a, self.b)

    # ------------------------------------------------------------------ evaluation
    def _sine_difference(self, x: T, sin: Callable, cos: Callable) -> T:
        """sin g(x) - sin 2b (see ``_sine_difference``)."""
        return _sine_difference(x, self.a, self.b, sin, cos)

    def f(self, t: T) -> T:
        """The warped coordinate f(t), elementwise.

        Args:
            t: a Python number, a numpy array or a torch tensor (any shape).

        Returns:
            Same kind and shape as t (a Python float for a number; numpy float64 for
            sequences; a tensor of t's dtype for tensors).
        """
        x = _as_input(t)
        sin, cos = _trig(x)
        if self.is_unit:
            return _as_output(t, _unit_warp(x, 0.5 * self.lam, sin))  # type: ignore[return-value]
        return _as_output(t, _warp(x, self.lam, self.a, self.b, sin, cos))  # type: ignore[return-value]

    def df(self, t: T) -> T:
        """The slope f'(t), elementwise (same input kinds as ``f``)."""
        x = _as_input(t)
        sin, cos = _trig(x)
        g = 2.0 * (self.a * (1.0 - x) + self.b * x)
        diff = self._sine_difference(x, sin, cos)
        slope = 1.0 + (0.5 * self.lam) * diff + self.lam * x * (self.b - self.a) * cos(g)
        return _as_output(t, slope)  # type: ignore[return-value]

    def slope_minimum(self, n: int = SLOPE_GRID) -> tuple[float, float]:
        """(min f', the t where it occurs) on an n-point grid of [0, 1] with both
        endpoints, refined on a 1001-point grid between the minimum's neighbours."""
        if n < 2:
            raise ValueError(f"AxisWarp.slope_minimum: need n >= 2 grid points, got {n}")
        return _slope_minimum(self.lam, self.a, self.b, int(n))

    def min_slope(self, n: int = SLOPE_GRID) -> float:
        """Minimum of f' over [0, 1] (see ``slope_minimum``)."""
        return self.slope_minimum(n)[0]

    @property
    def folds(self) -> bool:
        """True when f' < -FOLD_TOLERANCE somewhere on [0, 1] (the map is not monotone)."""
        return self.min_slope() < -FOLD_TOLERANCE

    def __str__(self) -> str:
        return f"(lam={self.lam:g}, a={self.a:g}, b={self.b:g})"


IDENTITY: AxisWarp = AxisWarp()


@dataclass(frozen=True)
class DeformationModule:
    """A named pair of axis warps: x (columns / horizontal) and y (rows / vertical).

    Construction raises ValueError if either warp folds, unless ``allow_folding``.
    """

    name: str
    x: AxisWarp = field(default=IDENTITY)
    y: AxisWarp = field(default=IDENTITY)
    allow_folding: bool = False

    def __post_init__(self) -> None:
        for axis, warp in self.axes():
            if not isinstance(warp, AxisWarp):
                raise ValueError(
                    f"deformation module {self.name!r}: {axis} must be an AxisWarp, got {warp!r}"
                )
        if self.allow_folding:
            return
        problem = self.fold_report()
        if problem:
            raise ValueError(
                f"deformation module {self.name!r}: {problem}; "
                "pass allow_folding=True to use it anyway"
            )

    def fold_report(self) -> str:
        """One line naming the first folding axis, its (lam, a, b), the min slope and
        where; "" when neither axis folds."""
        for axis, warp in self.axes():
            if warp.folds:
                slope, where = warp.slope_minimum()
                return (
                    f"{axis} axis warp {warp} folds "
                    f"(min f'(t) = {slope:.4g} at t = {where:.4f} < 0)"
                )
        return ""

    def axes(self) -> tuple[tuple[str, AxisWarp], tuple[str, AxisWarp]]:
        """(("x", x_warp), ("y", y_warp))."""
        return (("x", self.x), ("y", self.y))

    @property
    def is_identity(self) -> bool:
        """True when both axes are the identity."""
        return self.x.is_identity and self.y.is_identity

    def as_dict(self) -> dict[str, list[float]]:
        """{"x": [lam, a, b], "y": [lam, a, b]} (JSON-serialisable)."""
        return {axis: list(warp.params) for axis, warp in self.axes()}

    def warp_planes(self, t: Tensor, out: Tensor | None = None) -> Tensor:
        """f_x(t[0]) and f_y(t[1]) in one pass: t is (2, ...), an x plane and a y plane.

        The same operations as ``AxisWarp.f`` on each plane, with the two settings as
        (2, 1, ..., 1) tensors of t's dtype, so the result is bit-identical to warping
        each plane on its own, in a third of the torch calls (an identity axis comes back
        exactly unchanged). When every axis has a = 0, b = 1 or is the identity (every
        module in ``DEFORMATION_MODULES``) that is ``AxisWarp.f``'s direct form, one sine
        (an identity axis's plane is then copied back from t), in six torch calls without
        a gradient to track. Otherwise it is the product form, and without a
        gradient its intermediates are reused in place with the factors 2 and 1/2 left
        out (see below). A module with one a = 0, b = 1 axis and one other warping axis
        warps its planes one at a time.

        Args:
            t: (2, ...) floating tensor (float64 for the released precision).
            out: optional tensor shaped like t to write the result into, cast to its
                dtype (e.g. the float32 planes the float64 warp is for).

        Returns:
            out, or a new tensor shaped like t.
        """
        if t.dim() < 1 or t.shape[0] != 2:
            raise ValueError(f"warp_planes: need a (2, ...) tensor of x and y planes, got {tuple(t.shape)}")
        form = _plane_form(self)
        grad = torch.is_grad_enabled() and t.requires_grad
        if form == "mixed":
            warped = torch.stack([self.x.f(t[0]), self.y.f(t[1])])
            return warped if out is None else out.copy_(warped)
        if form == "unit":
            half_lam, sin_2 = _unit_plane_settings(self, t.dtype, t.device, t.dim())
            if grad:
                warped = _unit_warp(t, half_lam, torch.sin)
                if self.x.is_identity or self.y.is_identity:  # t itself, zeros' signs included
                    warped = torch.stack([t[k] if w.is_identity else warped[k] for k, (_, w) in enumerate(self.axes())])
            else:  # _unit_warp's operations, in this order, in reused buffers
                warped = torch.mul(t, half_lam).mul_(torch.add(t, t).sin_().sub_(sin_2)).add_(t)
                for k, (_, w) in enumerate(self.axes()):
                    if w.is_identity:  # t itself, zeros' signs included (t + (-0 * 0) * d may be +0)
                        warped[k].copy_(t[k])
            # (add_ then copy_ beats one mixed-dtype add into out: 4.4 against 5.1 us here)
            return warped if out is None else out.copy_(warped)
        lam, a, b, a_minus_b, one = _plane_settings(self, t.dtype, t.device, t.dim())
        if grad:
            warped = _warp(t, lam, a, b, torch.sin, torch.cos)
            return warped if out is None else out.copy_(warped)
        # _warp's operations in reused buffers. Its (lam / 2) t * (2 cos * sin) is computed
        # as (lam t) * (cos * sin): scaling by 2 or 1/2 is exact, so each rounding sees the
        # same value times a power of two and the products come out the same bits.
        u = torch.sub(one, t)
        cos_mean = torch.mul(u, a).add_(torch.mul(t, b)).add_(b).cos_()  # cos(a u + b t + b)
        sine = u.mul_(a_minus_b).sin_()  # sin((a - b) u)
        warped = torch.mul(t, lam).mul_(sine.mul_(cos_mean)).add_(t)  # t + (lam / 2) t diff
        return warped if out is None else out.copy_(warped)


@lru_cache(maxsize=64)
def _plane_form(module: DeformationModule) -> str:
    """How ``warp_planes`` warps a module's planes: "unit" (every axis a = 0, b = 1 or the
    identity: the direct form), "general" (no a = 0, b = 1 axis that warps: the product
    form) or "mixed" (one of each: plane by plane)."""
    unit = [w.is_unit and not w.is_identity for _, w in module.axes()]
    other = [not w.is_unit and not w.is_identity for _, w in module.axes()]
    if not any(other):
        return "unit"
    return "mixed" if any(unit) else "general"


@lru_cache(maxsize=64)
def _unit_plane_settings(module: DeformationModule, dtype: torch.dtype, device: torch.device,
                         dims: int) -> tuple[Tensor, Tensor]:
    """(lam / 2 of the x and y warps as a (2, 1, ..., 1) tensor, 0 for an identity axis (whose
    plane ``warp_planes`` copies back);
    sin 2 as a 0-dim tensor), cached like ``_plane_settings``."""
    half = [0.0 if w.is_identity else 0.5 * w.lam for _, w in module.axes()]
    half_lam = torch.tensor(half, dtype=torch.float64).to(dtype=dtype, device=device).view(2, *[1] * (dims - 1))
    return half_lam, torch.tensor(SIN_2, dtype=torch.float64).to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def _plane_settings(module: DeformationModule, dtype: torch.dtype, device: torch.device, dims: int) -> tuple[Tensor, ...]:
    """(lam, a, b, a - b) of the x and y warps as (2, 1, ..., 1) tensors with dims dims (one
    value per plane), then the constant 1 as a 0-dim tensor; cached, so a call makes no new
    tensors (a view or a Python number in an in-place operation costs about a microsecond
    each, a tenth of these small operations)."""
    lam, a, b = torch.tensor([module.x.params, module.y.params], dtype=torch.float64).T
    values = torch.stack([lam, a, b, a - b]).to(dtype=dtype, device=device)
    one = torch.tensor(1.0, dtype=dtype, device=device)
    return (*(v.view(2, *[1] * (dims - 1)) for v in values), one)


#: The released code's one setting per axis. 2.1 / -4.1 are its numbers, kept here once.
EXPAND: AxisWarp = AxisWarp(lam=2.1, a=0.0, b=1.0)
COMPRESS: AxisWarp = AxisWarp(lam=-4.1, a=0.0, b=1.0)

#: Named deformation modules. "released" is the released code's one deformation
#: (commented there as horizontal expansion with vertical compression); the four
#: one-axis modules follow the paper's figure labels. See the module docstring for how
#: well the names describe the maps.
DEFORMATION_MODULES: dict[str, DeformationModule] = {
    "released": DeformationModule("released", x=EXPAND, y=COMPRESS),
    "HE": DeformationModule("HE", x=EXPAND),
    "VE": DeformationModule("VE", y=EXPAND),
    "HC": DeformationModule("HC", x=COMPRESS),
    "VC": DeformationModule("VC", y=COMPRESS),
}
