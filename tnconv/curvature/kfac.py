"""KFAC of a whole model: running Kronecker factors of every supported layer, and their preconditioner.

Per layer and group, the curvature block of the weight is ``kron(B, A)`` with
``A`` the input factor (the derived ``kfac_expand``/``kfac_reduce`` networks for
conv layers) and ``B`` the output factor from the columns pulled back to the
layer output (``tnconv.curvature.factors``). The scaling is curvlinops'
``KFACLinearOperator`` with ``loss_average="batch"``: ``A`` is a mean over the
samples seen; ``B`` is a mean over them for a loss with ``reduction="mean"``
and a sum for ``reduction="sum"``, so that ``kron(B, A)`` approximates the GGN of
that loss over all the data that ``update`` saw.

``update`` records a batch (one forward, one batched backward: each layer's input and the
columns at its output, ``kfac_batch.LayerBatch``) and hands it to ``KFAC._add_batch``, the one
step by which a batch joins the factors: the batch's factors are checked finite
(``kfac_batch.check_batch``) before any running factor is touched, then blended into the running
ones in place (with ``distributed``: all-reduced first, then checked).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Mapping

import torch

from tnconv.conv.checks import check_finite
from tnconv.curvature.columns import FISHERS, check_loss, check_output, fisher_columns
from tnconv.curvature.factors import accumulate_bias, input_factor, mean_patch, output_factor
from tnconv.curvature.hooks import forward, pull_back
from tnconv.curvature.kfac_batch import (
    LayerBatch, Pending, check_batch, check_factors, factor_dtype, factor_shapes,
)
from tnconv.curvature.preconditioner import Preconditioner
from tnconv.curvature.supported import Layer, check_model, check_unshared, find_layers
from tnconv.curvature.tracking import Tracker
from tnconv.distributed import all_reduce_factors, tell_failures

APPROXES = ("expand", "reduce")
Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Blend:
    """How a batch factor enters a running one: ``running = beta * running + alpha * batch`` (in place)."""

    beta: float
    alpha: float

    def merge(self, running: torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
        """``beta * running + alpha * batch`` written into ``running``; ``batch`` itself scaled when there is none."""
        if running is None or self.beta == 0:
            return batch if self.alpha == 1 else batch.mul_(self.alpha)
        return running.mul_(self.beta).add_(batch, alpha=self.alpha)


FRESH = Blend(0.0, 1.0)


class KFAC:
    """Kronecker-factored curvature of every supported layer of ``model``, accumulated over batches.

    Args:
        model: any ``torch.nn.Module``; its ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` and
            ``Linear`` layers (``torch.nn`` or ``tnconv.nn``) with a trainable weight get
            factors, wherever they sit; every other module is differentiated through. A layer
            must run at most once per forward, and its parameters must be its own (a weight
            tied to another module: ``ValueError``); a layer that does not run (its weight used
            by another module through ``F.linear``) gets no factors, with a warning.
        loss_function: a ``torch.nn.CrossEntropyLoss`` or ``MSELoss`` (``reduction`` "mean" or "sum").
        approx: ``"expand"`` or ``"reduce"``: which KFAC for layers that share weights over
            locations (conv layers, ``Linear`` on ``(N, *, features)``).
        fisher: ``"type-2"`` (the exact GGN's factorisation, ``C`` columns pulled back in one
            batched backward), ``"mc"`` (``mc_samples`` labels drawn from the model's predictive
            distribution) or ``"empirical"`` (the gradient of the loss on the targets).
        mc_samples: labels drawn per sample (``fisher="mc"`` only; otherwise it must be 1).
        separate_bias: keep a bias apart (``(None, B)`` under ``name + ".bias"``) or fold it
            into ``A`` as a trailing row and column of ones.
        generator: the random source of ``fisher="mc"``.
        ema_decay: None (default) for the running mean over all batches, weighted by batch
            size; a number in ``[0, 1)`` for an exponential moving average used in training:
            each ``update`` sets ``factor = ema_decay * factor + (1 - ema_decay) * batch factor``
            (the first one takes the batch factor).
        distributed: all-reduce each batch's factors across the ranks of ``group`` with
            ``tnconv.distributed.all_reduce_factors`` before they are accumulated, so that
            every rank holds the factors of the global batch (weighted by each rank's batch size).
            The ranks must agree on the settings (``approx``, ``fisher``, the loss and its
            reduction, ``separate_bias``, ``ema_decay``) and on the samples seen so far; a rank
            whose batch fails makes every rank raise.
        group: the ``torch.distributed`` process group (default: the whole world).

    ``update`` runs one forward of ``model`` in its current mode (BatchNorm statistics
    update as in any training forward) and leaves every ``.grad`` as it was.

    ``update`` writes each batch's products straight into the running factors (in place, no
    temporary of a factor's size; deep Grams by one triangle, mirrored, exactly symmetric; shallow ones,
    e.g. KFAC-reduce's, one dense product: ``tnconv.routines.gram``). The factors of a float16/bfloat16 model are
    summed and held in float32 (a running mean in bfloat16 would stop moving after a few hundred batches); the
    preconditioner solves in float32 and returns gradients in their own dtype.
    """

    def __init__(
        self, model: torch.nn.Module, loss_function: torch.nn.Module, *, approx: str = "expand",
        fisher: str = "type-2", mc_samples: int = 1, separate_bias: bool = True,
        generator: torch.Generator | None = None, ema_decay: float | None = None, distributed: bool = False,
        group: "torch.distributed.ProcessGroup | None" = None,
    ) -> None:  # fmt: skip
        self.model = check_model(model)
        self.loss = check_loss(loss_function)
        if approx not in APPROXES:
            raise ValueError(f"approx must be one of {APPROXES}, got {approx!r}")
        if fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be an int >= 1, got {mc_samples!r}")
        if fisher != "mc" and mc_samples != 1:
            raise ValueError(f"mc_samples must be 1 unless fisher='mc', got mc_samples={mc_samples} with {fisher=}")
        for flag, value in (("separate_bias", separate_bias), ("distributed", distributed)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if ema_decay is not None and (
            isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0 <= ema_decay < 1
        ):
            raise ValueError(f"ema_decay must be None or a number in [0, 1), got {ema_decay!r}")
        self.approx, self.fisher, self.mc_samples = approx, fisher, mc_samples
        self.separate_bias, self.generator, self.ema_decay = separate_bias, generator, ema_decay
        self.distributed, self.group = distributed, group
        self.layers: list[Layer] = find_layers(self.model)
        check_unshared(self.model, self.layers, allowed=False)
        self.count = 0  # samples seen (on all ranks when distributed)
        self.version = 0  # bumped whenever the factors change; preconditioners watch it
        self._tracker: Tracker | None = None  # the open track() block
        self._factors: dict[str, Pair] = {}  # layer name -> (A, B), A joined with the bias unless separate

    # --- accumulation ---------------------------------------------------------------------------
    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add the batch ``(inputs, targets)`` to the factors: one forward, one batched backward.

        ``model(inputs)`` must be ``(N, C)`` logits (cross-entropy) or predictions (MSE).
        The running factors are updated in place (``factor = beta * factor + alpha * batch
        factor``, the products written straight into them): tensors taken from ``factors`` or
        ``state_dict`` before change with them (clone them to keep a snapshot).

        A batch whose inputs, targets or batch factors are not finite raises a ``ValueError``
        that names what is not (a layer's factor: the layer) and leaves the factors, ``count``
        and ``version`` as they were.
        """
        with self._told():
            check_finite(inputs, "inputs")
            output, records = forward(self.model, self.layers, inputs)
            targets = check_output(output, targets, self.loss)
            check_finite(targets, "targets")
            samples = None if self.fisher != "mc" else self.mc_samples
            columns = fisher_columns(output, targets, self.loss, self.fisher, samples, self.generator)
            pulled = pull_back(output, records, columns)
            del columns
            batches = [LayerBatch.pulled(layer, records.pop(layer.name), pulled.pop(layer.name))
                       for layer in self.layers if layer.name in records]  # fmt: skip
        self._add_batch(batches, output.shape[0])

    def track(self, enabled: bool = True) -> Tracker:
        """A context manager in which the model's own forwards and the caller's own ``loss.backward()`` record
        batches, each joining the factors as ``update(inputs, targets)`` on it would (``tnconv.curvature.tracking``).

        Each forward of the model inside the block (with gradients on) is a batch: ``fisher="empirical"`` reads
        the gradients of the caller's backward (the loss must be ``loss_function(model(inputs), targets)`` with
        this KFAC's ``loss_function``, unscaled); ``"mc"`` and ``"type-2"`` pull their columns back through the
        forward's graph in one batched backward when the forward ends, leaving every ``.grad`` as it was. A batch
        joins the factors when the next tracked forward begins or the block ends (with ``distributed``: each rank's
        batches are combined, then all-reduced once, at the end of the block). ``enabled=False`` records nothing.
        """
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        return Tracker(self, enabled)

    def _add_batch(self, batches: list[LayerBatch], size: int) -> None:
        """Blend one batch of ``size`` samples (every layer that ran: ``batches``) into the running factors, or
        refuse it with a ValueError, leaving them as they were: the step that every way of recording a batch ends in.

        The batch's factors are checked finite before any running factor is touched (``check_batch``; with
        ``distributed``, the all-reduced ones), then written into the running ones in place. ``batches`` is
        emptied on the way, so that each layer's input and columns are released once its factors hold them.
        """
        if self.distributed:
            with self._told():
                pending = self._pend(Pending(), batches, size)
            self._join(pending)
            return
        self._check_layers([batch.layer.name for batch in batches])
        if self.approx == "reduce":  # the patch sums, formed once for the check, A and a joined bias
            batches[:] = [batch.with_sums() for batch in batches]
        check_batch(batches, self.approx == "reduce")
        self._blend_into(self._factors, batches, *self._blends(size))
        self.count += size
        self.version += 1

    def _pend(self, pending: Pending, batches: list[LayerBatch], size: int) -> Pending:
        """Blend one batch of this rank into ``pending``, the factors of its batches since the last all-reduce
        (``Pending``: new tensors, the running factors untouched), emptying ``batches``; returns ``pending``."""
        self._check_layers([batch.layer.name for batch in batches], pending.factors or self._factors)
        self._blend_into(pending.factors, batches, *self._pending_blends(pending, size))
        pending.samples += size
        pending.batches += 1
        return pending

    def _blend_into(self, factors: dict[str, Pair], batches: list[LayerBatch], blend_a: Blend, blend_b: Blend) -> None:
        """Blend each layer's batch into ``factors`` (layer name -> ``(A, B)``, new ones for a layer without),
        emptying ``batches`` as it goes so that each layer's input and columns are released once held."""
        batches.reverse()
        while batches:
            batch = batches.pop()
            factors[batch.layer.name] = self._accumulate_layer(batch, factors.get(batch.layer.name), blend_a, blend_b)

    def _pending_blends(self, pending: Pending, size: int) -> tuple[Blend, Blend]:
        """How a batch of ``size`` samples enters ``pending`` so that ``_join`` gives what blending each batch into
        the running factors would: size-weighted sums (``B`` plain sums for a summed loss) for the running mean;
        for the moving average, each batch ``(1 - ema_decay)`` on top of the earlier ones times ``ema_decay`` (the
        very first batch alone, as ``_blends`` takes it)."""
        beta = 0.0 if not pending.batches else 1.0 if self.ema_decay is None else self.ema_decay
        if self.ema_decay is not None:
            ema = Blend(beta, 1.0 if not (pending.batches or self._factors) else 1.0 - self.ema_decay)
            return ema, ema
        weighted = Blend(beta, float(size))
        return weighted, Blend(beta, 1.0) if self.loss.reduction == "sum" else weighted

    def _join(self, pending: Pending) -> None:
        """All-reduce the ranks' ``pending`` factors (one message) and blend them into the running ones, or refuse
        them with a ValueError on every rank alike (a factor that is not finite), leaving the running ones as they
        were. Every rank must have recorded as many batches, through the same layers."""
        reduced, samples = self._all_reduce(pending)
        if not samples:  # no rank recorded a batch
            return
        check_factors(reduced, "the batch's factor {which} of layer {name!r} (all ranks together) is not finite: "
                               "the batch is refused and the running factors are unchanged")  # fmt: skip
        blend_a, blend_b = self._joining_blends(samples, pending.batches)
        for name, (a, b) in reduced.items():
            running = self._factors.get(name)
            self._factors[name] = (blend_a.merge(running[0] if running else None, a),
                                   blend_b.merge(running[1] if running else None, b))  # fmt: skip
        self.count += samples
        self.version += 1

    def _joining_blends(self, samples: int, batches: int) -> tuple[Blend, Blend]:
        """How the all-reduced pending factors of ``batches`` batches and ``samples`` samples enter the running ones:
        the moving average's ``ema_decay ** batches`` on the running factors; the running mean's weights."""
        if not self._factors:
            fresh = FRESH if self.ema_decay is not None else Blend(0.0, 1.0 / samples)
            return fresh, FRESH if self.ema_decay is None and self.loss.reduction == "sum" else fresh
        if self.ema_decay is not None:
            ema = Blend(self.ema_decay**batches, 1.0)
            return ema, ema
        total = self.count + samples
        mean = Blend(self.count / total, 1.0 / total)
        return mean, Blend(1.0, 1.0) if self.loss.reduction == "sum" else mean

    def _told(self) -> AbstractContextManager[None]:
        """Where a distributed rank's failure is told to the other ranks (``tell_failures``); else nothing."""
        return tell_failures(self.group) if self.distributed else nullcontext()

    def _check_layers(self, names: list[str], held: Mapping[str, Pair] | None = None) -> None:
        """The layers that ran must be those that hold factors (``held``, default the running ones: all of them,
        from the first batch on)."""
        held = self._factors if held is None else held
        if not held or set(names) == set(held):
            return
        missing = [name for name in held if name not in names]
        new = [name for name in names if name not in held]
        raise ValueError(
            f"the layers that ran differ from those with factors: {missing} have factors but did not run, {new} ran "
            f"but have none (every batch must run the same layers)"
        )

    def _blends(self, size: int) -> tuple[Blend, Blend]:
        """How this batch of ``size`` samples enters the running ``A`` and ``B``: the first batch alone, a running
        mean weighted by batch size (``B`` summed for a summed loss), or the exponential moving average."""
        if not self._factors:
            return FRESH, FRESH
        if self.ema_decay is not None:
            ema = Blend(self.ema_decay, 1.0 - self.ema_decay)
            return ema, ema
        weight = size / (self.count + size)
        mean = Blend(1.0 - weight, weight)
        return mean, Blend(1.0, 1.0) if self.loss.reduction == "sum" else mean

    def _accumulate_layer(self, batch: LayerBatch, running: Pair | None, blend_a: Blend, blend_b: Blend) -> Pair:
        """One layer's ``(A, B)`` (``A`` joined with the bias unless kept separate) blended into ``running`` in place,
        or new ones when ``running`` is None (float32 for float16/bfloat16 layers: their sums overflow)."""
        reduce = self.approx == "reduce"
        x, geometry = batch.x, batch.geometry
        joined = batch.layer.bias is not None and not self.separate_bias
        if running is None:
            a_shape, b_shape = factor_shapes(batch.layer, joined)
            dtype = factor_dtype(x.dtype)
            a = x.new_empty(a_shape, dtype=dtype)
            b = None if batch.b is not None else x.new_empty(b_shape, dtype=dtype)
        else:
            a, b = running
        d = a.shape[-1] - 1 if joined else a.shape[-1]
        input_factor(x, geometry, reduce, a[:, :d, :d], blend_a.alpha, blend_a.beta, batch.sums)
        if joined:
            accumulate_bias(a, mean_patch(x, geometry, batch.sums), blend_a.alpha, blend_a.beta)
        if batch.b is not None:
            return a, blend_b.merge(b, batch.b)
        assert batch.columns is not None and b is not None  # a batch holds its columns or its formed B
        output_factor(batch.columns, geometry, reduce, b, blend_b.alpha, blend_b.beta)
        return a, b

    def _all_reduce(self, pending: Pending) -> tuple[dict[str, Pair], int]:
        """The sums over the ranks of their ``pending`` factors (the moving average's weighted by each rank's samples
        and divided by all of theirs), and the samples of all ranks; the ranks must agree on the settings, on the
        samples seen so far and on the number of batches pending."""
        factors = pending.factors
        if self.ema_decay is not None:
            factors = {name: (a.mul_(pending.samples), b.mul_(pending.samples)) for name, (a, b) in factors.items()}
        reference = next(iter(factors.values()))[0] if factors else torch.empty(())
        samples = torch.tensor(float(pending.samples), dtype=reference.dtype, device=reference.device)
        settings = {**self._settings(), "ema_decay": self.ema_decay, "count": self.count, "batches": pending.batches}
        totals, total = all_reduce_factors((factors, samples), reduction="sum", group=self.group, settings=settings)
        size = round(total.item())
        if self.ema_decay is not None:
            totals = {name: (a.div_(size), b.div_(size)) for name, (a, b) in totals.items()}
        return totals, size

    # --- results --------------------------------------------------------------------------------
    @property
    def factors(self) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
        """Layer name -> ``(A, B)``, ``A`` ``(G, dA, dA)``, ``B`` ``(G, dB, dB)``; ``name + ".bias"`` -> ``(None, B)``.

        The bias entry exists with ``separate_bias=True`` for layers with a trainable bias;
        otherwise the bias is in ``A`` (``dA = d + 1``). Empty before the first ``update``;
        layers that did not run have none.
        """
        result: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}
        for layer in self.layers:
            if layer.name not in self._factors:
                continue
            a, b = self._factors[layer.name]
            result[layer.name] = (a, b)
            if self.separate_bias and layer.bias is not None:
                result[layer.name + ".bias"] = (None, b)
        return result

    def _layer_factors(self) -> dict[str, Pair]:
        """Layer name -> ``(A, B)`` with the bias folded into ``A`` where configured (``state_dict``'s factors)."""
        return dict(self._factors)

    def preconditioner(self, damping: float, *, invert_every: int = 1) -> Preconditioner:
        """``(B + damping I)^{-1} G (A + damping I)^{-1}`` per layer and group, as a callable with ``.step()``.

        The damped inverses of the factors are computed on its first call and again on every
        ``invert_every``-th call (``step()`` or a call on gradients) at which the factors changed since, and
        at once after ``preconditioner.damping`` changed; in between, the same inverses are applied.
        """
        return Preconditioner(self, damping, invert_every)

    # --- state ----------------------------------------------------------------------------------
    def _settings(self) -> dict[str, object]:
        """What must agree between a state dict and the KFAC that loads it."""
        return {
            "approx": self.approx, "fisher": self.fisher, "separate_bias": self.separate_bias,
            "loss": type(self.loss.function).__name__, "reduction": self.loss.reduction,
        }  # fmt: skip

    def state_dict(self) -> dict[str, object]:
        """The factors (layer name -> ``(A, B)``, bias joined as configured), the sample count, the settings."""
        return {**self._settings(), "count": self.count, "factors": self._layer_factors()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Take the factors and count of ``state`` (from ``state_dict`` of a KFAC with the same settings and layers).

        Each layer's factors must have the shapes its ``update`` gives them (per group), the dtype it
        sums them in (float32 for a float16/bfloat16 layer, else the layer's) and finite entries; they
        are copied to the device of the layer's parameters.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping from state_dict(), got {type(state).__name__}")
        missing = [key for key in (*self._settings(), "count", "factors") if key not in state]
        if missing:
            raise ValueError(f"state lacks the keys {missing}")
        for key, value in self._settings().items():
            if state[key] != value:
                raise ValueError(f"state has {key}={state[key]!r} but this KFAC has {key}={value!r}")
        count = state["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"state['count'] must be an int >= 1, got {count!r}")
        factors = self._checked_state_factors(state["factors"])
        check_factors(factors, "state['factors'][{name!r}]: layer {name!r} needs a finite {which}, got NaN or inf")
        self._factors = {name: (a.detach().clone(), b.detach().clone()) for name, (a, b) in factors.items()}
        self.count = count
        self.version += 1

    def _checked_state_factors(self, factors: object) -> dict[str, Pair]:
        """``state['factors']``: layer name -> ``(A, B)`` for some of this KFAC's layers (those that ran), each pair
        shaped, typed and placed as ``update`` makes it (``factor_shapes``, ``factor_dtype``), on the layer's device."""
        layers = {layer.name: layer for layer in self.layers}
        if not isinstance(factors, Mapping) or not factors or any(name not in layers for name in factors):
            names = sorted(factors) if isinstance(factors, Mapping) else factors
            raise ValueError(f"state['factors'] must hold some of the layers {list(layers)}, got {names}")
        result = {}
        for name, pair in factors.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(isinstance(f, torch.Tensor) for f in pair)):  # fmt: skip
                raise ValueError(f"state['factors'][{name!r}] must be a pair (A, B) of tensors, got {pair!r}")
            layer = layers[name]
            parameter = next(layer.module.parameters())
            dtype = factor_dtype(parameter.dtype)
            shapes = factor_shapes(layer, layer.bias is not None and not self.separate_bias)
            for factor, which, shape in zip(pair, "AB", shapes):
                if tuple(factor.shape) != shape or factor.dtype != dtype:
                    raise ValueError(
                        f"state['factors'][{name!r}]: layer {name!r} needs {which} of shape {shape} in {dtype}, got "
                        f"{tuple(factor.shape)} in {factor.dtype}"
                    )
            result[name] = (pair[0].to(parameter.device), pair[1].to(parameter.device))
        return result
