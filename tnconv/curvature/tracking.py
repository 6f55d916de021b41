"""``KFAC.track()``: the batches of the caller's own training step, recorded by hooks and joined to the factors.

Inside an enabled block, each forward of the model with gradients on is a batch:

- a forward pre-hook on the model opens it (after the batch before it joined the factors);
- a forward hook on each supported layer keeps the layer's input (detached: the tensor that autograd saves
  for the weight gradient anyway) and the gradient edge of its output
  (``torch.autograd.graph.get_gradient_edge``, taken before a later module can change the output in place);
- ``fisher="empirical"``: a pre-hook on the node of each layer output gets the gradient of the caller's loss
  there during the caller's ``backward()`` and forms the layer's ``B`` from it at once (scaled by the loss's mean
  divisor, as ``columns.fisher_columns`` scales the empirical columns), so that no gradient is kept;
- ``fisher="mc"`` / ``"type-2"``: a forward hook on the model, when its forward ends, pulls the columns
  (``loss.sqrt_ggn``) back to every layer output through the forward's own graph in one batched backward
  (``hooks.pull_back_edges``: the graph is kept for the caller's backward, no ``.grad`` is touched) and forms
  each ``B`` at once;
- the batch joins the factors (``KFAC._add_batch``: checked, then blended in place; with ``distributed``,
  ``KFAC._pend`` into this rank's pending factors, all-reduced once by ``KFAC._join`` when the block ends)
  when the next forward begins or the block ends; its inputs are released then.

So a tracked step keeps, beyond what the step itself holds, each layer's ``B`` of the batch (``(G, c, c)``) and
the inputs that autograd frees as its backward passes each layer, until the batch joins.

A compiled model (``torch.compile``) runs its original modules eagerly inside an enabled block
(``torch.compiler.set_stance("force_eager")``): the hooks need each layer's own forward, and a compiled backward
has no per-layer nodes. Layers under ``tnconv.nn.approximate_backprop`` keep their estimated weight gradients
in the caller's backward; the columns pulled back by the extra backward are exact (their input gradients are).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Callable

import torch
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.utils.hooks import RemovableHandle

from tnconv.curvature.columns import check_model_output, fisher_columns, mean_divisor
from tnconv.curvature.factors import geometry, output_factor
from tnconv.curvature.hooks import check_ran, check_single_calls, pull_back_edges
from tnconv.curvature.kfac_batch import LayerBatch, Pending, factor_dtype, factor_shapes
from tnconv.curvature.supported import Layer, warn_batch_statistics
from tnconv.distributed import tell_failure
from tnconv.routines.gram import HALF

if TYPE_CHECKING:
    from tnconv.curvature.kfac import KFAC


@dataclass
class Recorded:
    """A layer's share of a tracked batch: its input and output shape from the forward, the gradient edge of its
    output, and its ``B`` once the columns (or the caller's gradient) reached it."""

    layer: Layer
    x: torch.Tensor
    output_shape: torch.Size
    edge: GradientEdge
    b: torch.Tensor | None = None


@dataclass
class TrackedBatch:
    """One tracked forward: its layers' records, its samples (the model output's rows; 0 until the forward ends),
    the loss's mean divisor (empirical ``B``) and the handles of its gradient hooks."""

    records: dict[str, Recorded] = field(default_factory=dict)
    size: int = 0
    divisor: int = 1
    handles: list[RemovableHandle] = field(default_factory=list)

    def release(self) -> None:
        """Remove the gradient hooks: a later backward through this forward's graph records nothing."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def compiled(model: torch.nn.Module) -> bool:
    """Whether ``model`` or a module in it is compiled (``torch.compile(module)`` or ``module.compile()``)."""
    from torch._dynamo.eval_frame import OptimizedModule  # deferred: importing dynamo costs time

    return any(isinstance(module, OptimizedModule) or getattr(module, "_compiled_call_impl", None) is not None
               for module in model.modules())  # fmt: skip


class Tracker:
    """The context manager that ``KFAC.track(enabled)`` returns (module docstring); reusable, one block at a time."""

    def __init__(self, kfac: KFAC, enabled: bool) -> None:
        self.kfac, self.enabled = kfac, enabled
        self._stack: ExitStack | None = None
        self._batch: TrackedBatch | None = None
        self._pending: Pending | None = None

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        kfac = self.kfac
        if kfac._tracker is not None:
            raise ValueError("this KFAC is already tracking (a track() block inside another one of the same KFAC)")
        warn_batch_statistics(kfac.model, stacklevel=4)  # the with statement
        stack = ExitStack()
        if compiled(kfac.model):
            stack.enter_context(torch.compiler.set_stance("force_eager"))
        handles = [kfac.model.register_forward_pre_hook(self._begin), kfac.model.register_forward_hook(self._end)]
        handles += [layer.module.register_forward_hook(self._recorder(layer)) for layer in kfac.layers]
        for handle in handles:
            stack.callback(handle.remove)
        if kfac.distributed:
            self._pending = Pending()
        self._stack, kfac._tracker = stack, self
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if not self.enabled or self._stack is None:
            return
        self._stack.close()
        batch, pending = self._batch, self._pending
        self._stack = self._batch = self._pending = self.kfac._tracker = None
        if error is not None:  # the block failed: its batches are dropped, and the other ranks told
            if batch is not None:
                batch.release()
            if pending is not None and isinstance(error, Exception):
                tell_failure(error, self.kfac.group)
            return
        with self.kfac._told():
            if batch is not None:
                self._fold(batch, pending)
        if pending is not None:
            self.kfac._join(pending)

    # --- hooks ----------------------------------------------------------------------------------
    def _begin(self, module: torch.nn.Module, args: tuple[object, ...]) -> None:
        """The model's forward pre-hook: the batch before joins the factors; a forward with gradients opens one."""
        batch, self._batch = self._batch, None
        if batch is not None:
            self._fold(batch, self._pending)
        if torch.is_grad_enabled():
            self._batch = TrackedBatch()

    def _recorder(self, layer: Layer) -> Callable[[torch.nn.Module, tuple[object, ...], object], None]:
        """The forward hook of ``layer``: keep its input and its output's gradient edge (and, for the empirical
        Fisher, hook the caller's gradient there)."""

        def record(module: torch.nn.Module, args: tuple[object, ...], output: object) -> None:
            batch = self._batch
            if batch is None or batch.size or not isinstance(output, torch.Tensor) or output.grad_fn is None:
                return  # outside a tracked forward, or no graph to record from
            if layer.name in batch.records:
                check_single_calls(layer, 2)
            x = args[0]
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"layer {layer.name!r} must get a tensor input, got {type(x).__name__}")
            recorded = Recorded(layer, x.detach(), output.shape, get_gradient_edge(output))
            batch.records[layer.name] = recorded
            if self.kfac.fisher == "empirical":
                batch.handles.append(recorded.edge.node.register_prehook(self._gradient(batch, recorded)))

        return record

    def _gradient(self, batch: TrackedBatch, recorded: Recorded) -> Callable[[tuple[torch.Tensor | None, ...]], None]:
        """The pre-hook on the node of a layer output: form ``B`` from the caller's gradient there (the first
        backward through it), ``mean_divisor`` times its Gram (``columns.fisher_columns``' empirical scaling)."""

        def gradient(grad_outputs: tuple[torch.Tensor | None, ...]) -> None:
            grad = grad_outputs[recorded.edge.output_nr]
            if grad is not None and recorded.b is None:
                recorded.b = self._output_factor(recorded.layer, grad.detach()[None], batch.divisor)

        return gradient

    def _end(self, module: torch.nn.Module, args: tuple[object, ...], output: object) -> None:
        """The model's forward hook: the batch's samples; for mc/type-2, its columns pulled back and each ``B``."""
        batch = self._batch
        if batch is None:
            return
        output = check_model_output(output)
        kfac = self.kfac
        batch.size = output.shape[0]
        if kfac.fisher == "empirical":
            batch.divisor = mean_divisor(output, kfac.loss)
            return
        samples = kfac.mc_samples if kfac.fisher == "mc" else None
        with torch.autocast(output.device.type, enabled=False):  # columns of a half output: in float32, then cast
            wide = output.float() if output.dtype in HALF else output
            columns = fisher_columns(wide, None, kfac.loss, kfac.fisher, samples, kfac.generator).to(output.dtype)
            edges = {name: (recorded.edge, recorded.output_shape) for name, recorded in batch.records.items()}
            pulled = pull_back_edges(output, edges, columns)
        del columns
        for name, recorded in batch.records.items():
            at_layer = pulled.pop(name)
            if at_layer is not None:
                recorded.b = self._output_factor(recorded.layer, at_layer, 1)

    # --- joining --------------------------------------------------------------------------------
    def _output_factor(self, layer: Layer, columns: torch.Tensor, scale: int) -> torch.Tensor:
        """The batch's ``B`` of ``layer`` from ``columns`` ``(M, *y.shape)``, times ``scale``."""
        return output_factor(columns, layer.layout, self.kfac.approx == "reduce", alpha=float(scale))

    def _fold(self, batch: TrackedBatch, pending: Pending | None) -> None:
        """``batch`` joins the factors (or, with ``distributed``, this rank's ``pending`` ones); a forward that did
        not end (it raised) is dropped. A layer the loss does not reach gets a zero ``B``, as in ``update``."""
        batch.release()
        if not batch.size:
            return
        kfac = self.kfac
        check_ran(kfac.layers, batch.records, stacklevel=5)
        if kfac.fisher == "empirical" and all(recorded.b is None for recorded in batch.records.values()):
            raise ValueError(
                "a tracked forward got no backward inside the track() block before the next forward or the end of "
                "the block: fisher='empirical' reads the gradients of the caller's loss.backward()"
            )
        batches = []
        for layer in kfac.layers:
            recorded = batch.records.pop(layer.name, None)
            if recorded is None:
                continue
            x, shape = geometry(layer.name, layer.module, recorded.x, recorded.output_shape)
            b = recorded.b
            if b is None:
                joined = layer.bias is not None and not kfac.separate_bias
                b = x.new_zeros(factor_shapes(layer, joined)[1], dtype=factor_dtype(x.dtype))
            batches.append(LayerBatch(layer, x, shape, b=b))
        if pending is None:
            kfac._add_batch(batches, batch.size)
        else:
            kfac._pend(pending, batches, batch.size)
